#!/bin/zsh -f
# Print what zsh's real completion system offers for a command line, one match per line:
#   zsh_complete.zsh FPATH_DIR 'dkms build -m '
# An interactive zsh runs in a pseudo-terminal (zpty); compinit loads the completion
# functions from FPATH_DIR; TAB runs complete-word on the line. compadd is wrapped to print
# the matches it accepted (after zsh's own prefix matching) between two marker lines; the
# shell exits as soon as the completion is over.
emulate -L zsh
zmodload zsh/zpty || exit 3
local fdir=$1 line=$2 out
local setup=$(mktemp)
trap 'rm -f $setup' EXIT
print -r -- "PS1='' PS2='' PROMPT_EOL_MARK=''
fpath=(${(q)fdir} \$fpath); autoload -Uz compinit; compinit -u -D
compadd() {
    if (( \${@[(I)-[OAD]]} )); then builtin compadd \"\$@\"; return; fi
    local -a __got; builtin compadd -O __got \"\$@\"
    local __m; for __m in \$__got; do print -r -- \"MATCH:\$IPREFIX\$__m\"; done
    builtin compadd \"\$@\"
}
_capture_begin() { print -r -- CAPTURE-BEGIN }
_capture_end() { print -r -- CAPTURE-END; exit 0 }
compprefuncs=(_capture_begin); comppostfuncs=(_capture_end)
bindkey '^I' complete-word
print READY-FOR-INPUT" > $setup

zpty -b capture zsh -f -i
zpty -w capture "source ${(q)setup}"
# wait for the set-up to be done (not just echoed) before typing the line
zpty -r -m capture out $'*\nREADY-FOR-INPUT*' || exit 3
zpty -w -n capture "$line"$'\t'
local seen=0
integer waited=0
# -t: never block; a read that finds nothing yet is retried for up to 15 s
while (( waited < 1500 )); do
    if ! zpty -r -t capture out; then
        sleep 0.01; (( waited++ )); continue
    fi
    out=${out//$'\r'/}; out=${out%$'\n'}
    case $out in
        *CAPTURE-BEGIN*) seen=1 ;;
        *CAPTURE-END*) break ;;
        MATCH:*) (( seen )) && print -r -- ${out#MATCH:} ;;
    esac
done
zpty -d capture
(( seen )) || { print -u2 "no completion ran"; exit 2 }
