#!/bin/bash
# Source dkms.conf-style files and report the kept variables to dkms-hooks.
#
# usage: readconf.bash OUT "NAME NAME..." DEPRECATED_NAMES NSCOPE [name value]... -- FILE...
#
# Each FILE is sourced from inside a function (so a top-level `local` works), in a
# subshell, with the scope variables set as plain shell variables. The kept variables are
# then written out as NAME[i]="value" text (a trailing CR dropped, the value expanded
# unquoted, so whitespace runs collapse) and that text is evaluated again in this shell.
# That second evaluation is what upstream dkms does, and real dkms.conf files rely on it
# (e.g. a MAKE value carrying \$kernel_source_dir). Records go to OUT, NUL-separated:
#   D file name count first   after each file, for each deprecated name
#   V name index value        the final values
shopt -s extglob

__out=$1
read -r -a __names <<< "$2"
read -r -a __deprecated <<< "$3"
__nscope=$4
shift 4
while (( __nscope > 0 )); do
    printf -v "$1" '%s' "$2"
    shift 2
    __nscope=$((__nscope - 1))
done
[[ ${1-} == -- ]] && shift

# The helper upstream offers to dkms.conf files.
override_dest_module_location() {
    if [[ ${addon_modules_dir-} ]]; then
        echo "/${addon_modules_dir}"
        return
    fi
    case "${running_distribution-}" in
        fedora* | centos* | rhel*) echo "/extra" ;;
        sles* | suse* | opensuse*) echo "/updates" ;;
        debian* | ubuntu* | arch*) echo "/updates/dkms" ;;
        *) echo "$1" ;;
    esac
}

for __n in "${__names[@]}"; do
    unset "$__n"
done

__first_pass() (
    . "$1" >/dev/null
    local __n __i __v
    local -a __idx
    for __n in "${__names[@]}"; do
        eval "__idx=(\"\${!${__n}[@]}\")"
        for __i in "${__idx[@]}"; do
            eval "__v=\${${__n}[\$__i]}"
            __v=${__v%$'\r'}
            # unquoted on purpose: this is the word splitting upstream's text round trip does
            echo $__n[$__i]=\"$__v\"
        done
    done
    local __d
    for __d in $(set | grep '^DKMS_DIRECTIVE' | cut -d = -f 2-3); do
        echo "${__d%%=*}=\"${__d#*=}\""
    done
)

__record() {
    builtin printf '%s\0' "$@" >> "$__out"
}

# The second evaluation runs in this shell: a value crafted to reassign where records go or
# which names are reported, or to redefine the functions that report them, fails instead.
readonly __out __names __deprecated
readonly -f __first_pass __record

: > "$__out"
for __file in "$@"; do
    [[ -e $__file ]] || continue
    __text=$(__first_pass "$__file")
    eval "$__text"
    for __n in "${__deprecated[@]}"; do
        eval "__count=\${#${__n}[@]}; __first=\${${__n}-}"
        __record D "$__file" "$__n" "$__count" "$__first"
    done
done
for __n in "${__names[@]}"; do
    eval "__idx=(\"\${!${__n}[@]}\")"
    for __i in "${__idx[@]}"; do
        eval "__v=\${${__n}[\$__i]}"
        __record V "$__n" "$__i" "$__v"
    done
done
exit 0
