#!/usr/bin/env bash
# Man pages from a program's own --help (no network, no help2man): packaging/gen-man.sh PROGRAM OUTDIR VERSION
#
# PROGRAM is moeatlas (CLI11 help: moeatlas.1 and one moeatlas-<subcommand>.1 per subcommand) or
# moeatlas-gui (QCommandLineParser help: moeatlas-gui.1). Help text is read as: the first lines up to
# a blank line are the description, "Usage: ..." is the synopsis, a line "Heading:" at column 0 opens a
# section, an indented "entry   text" line (two or more spaces between) is one item of it. The pages
# are written gzip -9n compressed, as Debian installs them; nothing depends on the date or the host.
set -euo pipefail
export LC_ALL=C

prog="$1"
outdir="$2"
version="$3"
name="$(basename "$prog")"
mkdir -p "$outdir"

# help_to_man PAGE_NAME SECTION_TITLE < help text > roff
help_to_man() {
  local page="$1" title="$2" also="$3"
  awk -v page="$page" -v title="$title" -v version="$version" -v also="$also" '
    function esc(s) { gsub(/\\/, "\\e", s); gsub(/-/, "\\-", s); return s }
    # Running text: a backslash stays literal, and only a dash starting a word (an option) is a minus.
    function body(s) {
      gsub(/\\/, "\\e", s); s = " " s; gsub(/ --/, " \\-\\-", s); gsub(/ -/, " \\-", s); s = substr(s, 2)
      if (s ~ /^[.\x27]/) s = "\\&" s
      return s
    }
    BEGIN { state = "desc"; desc = "" }
    /^Usage: / {
      u = $0; sub(/^Usage: /, "", u); sub(/^[^ ]*\//, "", u)   # the program name, not its build path
      usage = u; state = "post"; next
    }
    state == "desc" && NF == 0 { if (desc != "") state = "post"; next }
    state == "desc" { desc = (desc == "" ? $0 : desc " " $0); next }
    /^[A-Za-z][A-Za-z ]*:$/ {
      h = toupper(substr($0, 1, length($0) - 1)); sections = sections ".SH " h "\n"; next
    }
    /^  +[^ ]/ {
      line = $0; sub(/^ +/, "", line)
      n = match(line, /  +/)
      if (n > 0) { entry = substr(line, 1, n - 1); text = substr(line, n + RLENGTH) }
      else { entry = line; text = "" }
      if (inItems && $0 ~ /^      +/ && n == 0) { sections = sections body(line) "\n"; next }
      sections = sections ".TP\n.B " esc(entry) "\n" body(text) "\n"; inItems = 1; next
    }
    NF == 0 { inItems = 0; next }
    { if (desc == "") desc = $0; else sections = sections ".PP\n" body($0) "\n" }
    END {
      up = toupper(page)
      printf ".TH \"%s\" \"1\" \"\" \"%s %s\" \"%s\"\n", esc(up), "MoE Atlas", version, title
      printf ".SH NAME\n%s \\- %s\n", esc(page), body(desc)
      if (usage != "") printf ".SH SYNOPSIS\n.B %s\n", esc(usage)
      printf ".SH DESCRIPTION\n%s\n", body(desc)
      printf "%s", sections
      if (also != "") printf ".SH SEE ALSO\n%s\n", also
    }'
}

write_page() { # PAGE roff-on-stdin
  gzip -9n > "$outdir/$1.1.gz"
}

if [[ "$name" == moeatlas-gui ]]; then
  QT_QPA_PLATFORM=offscreen "$prog" --help |
    help_to_man moeatlas-gui "MoE Atlas workbench" ".BR moeatlas (1)" | write_page moeatlas-gui
  exit 0
fi

top="$("$prog" --help)"
# The subcommands: the first word of each indented line after "Subcommands:".
mapfile -t subs < <(printf '%s\n' "$top" | awk '/^Subcommands:$/ { on = 1; next } /^[^ ]/ { on = 0 } on && NF { print $1 }')
see=""
for s in "${subs[@]}"; do see+=".BR moeatlas\\-$s (1),"$'\n'; done
see+=".BR moeatlas\\-gui (1)"
printf '%s\n' "$top" | help_to_man moeatlas "MoE Atlas" "$see" | write_page moeatlas
for s in "${subs[@]}"; do
  "$prog" "$s" --help | help_to_man "moeatlas-$s" "MoE Atlas" ".BR moeatlas (1)" | write_page "moeatlas-$s"
done
