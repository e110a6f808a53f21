#!/usr/bin/env bash
# Fail (exit 1, printing file:line: text) when a C source or header under src/, tests/unit/
# or fuzz/ calls a banned function (see shared/c-style.md): they either overflow buffers
# silently (sprintf, vsprintf, strcpy, strcat, gets), hide parse errors (atoi, atol), keep
# hidden state (strtok) or are not random enough for anything here (rand, srand).
# Checks git's tracked files plus untracked ones that are not ignored; outside a git work
# tree, every file found. Comments are skipped roughly: whole-line // and /* ... */ or
# " * " lines, and anything after // or /* on the same line. Silent on success.
set -euo pipefail

cd "$(dirname "$0")/.."
DIRS=(src tests/unit fuzz)

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mapfile -d '' FILES < <(git ls-files -z --cached --others --exclude-standard -- \
        "${DIRS[@]/%//*.c}" "${DIRS[@]/%//*.h}")
else
    mapfile -d '' FILES < <(find "${DIRS[@]}" -type f \( -name '*.c' -o -name '*.h' \) \
        -print0 2>/dev/null)
fi

# Deleted but still tracked files would make grep complain.
EXISTING=()
for f in "${FILES[@]}"; do
    [[ -f $f ]] && EXISTING+=("$f")
done
((${#EXISTING[@]})) || exit 0

BANNED='sprintf|vsprintf|strcpy|strcat|atoi|atol|strtok|gets|rand|srand'
# Not a line that starts as a comment; no // or /* before the call; the name as a whole word
# followed by '('.
PATTERN='^(?!\s*(//|/\*|\*))(?:(?!//|/\*).)*?\b('"$BANNED"')\s*\('

status=0
grep -HnP -- "$PATTERN" "${EXISTING[@]}" || status=$?
case $status in
0)
    echo "check-source: banned function(s) above; use snprintf, memcpy with a length," \
        "strtol/strtoul with checks, strtok_r or a parser, randombytes_buf (libsodium)" >&2
    exit 1
    ;;
1) exit 0 ;;        # no match
*) exit "$status" ;; # grep itself failed
esac
