#!/bin/sh
# Print the interpreter to build .venv with: Python 3.12 where the machine has it
# (on PATH or under pyenv), else the newest python3 >= 3.11. Exits 1 if none.
set -u
ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; }
for candidate in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12 \
                 python3.14 python3.13 "$HOME"/.pyenv/versions/3.13*/bin/python3.13 \
                 python3.11 python3; do
    path=$(command -v "$candidate" 2>/dev/null) || continue
    if ok "$path"; then
        echo "$path"
        exit 0
    fi
done
echo "no Python >= 3.11 found" >&2
exit 1
