// module atlas
