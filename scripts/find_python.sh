#!/bin/sh
# Print the interpreter to build a venv with.
#   scripts/find_python.sh        Python 3.12 where the machine has it (on PATH or under
#                                 pyenv), else the newest python3 >= 3.11
#   scripts/find_python.sh 3.11   exactly that version (the vLLM CPU build needs 3.11)
# Exits 1 if none is found.
set -u
want=${1:-}
if [ -n "$want" ]; then
    candidates="python$want $HOME/.pyenv/versions/$want*/bin/python$want"
    check="import sys; sys.exit(0 if '%d.%d' % sys.version_info[:2] == '$want' else 1)"
else
    candidates="python3.12 $HOME/.pyenv/versions/3.12*/bin/python3.12 python3.14 python3.13
                $HOME/.pyenv/versions/3.13*/bin/python3.13 python3.11 python3"
    check="import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)"
fi
for candidate in $candidates; do
    path=$(command -v "$candidate" 2>/dev/null) || continue
    if "$path" -c "$check" 2>/dev/null; then
        echo "$path"
        exit 0
    fi
done
echo "no suitable Python (${want:->= 3.11}) found" >&2
exit 1
