// module text
