# bash completion for dkms (dkms-hooks): verbs, options per verb, module names and
# versions (the source tree for add, the dkms tree otherwise), kernels from the install tree.
# The trees follow --dkmstree/--sourcetree/--installtree on the line being completed, else
# framework.conf, else DKMS_HOOKS_SYSROOT's (as dkms itself does), else the system's.

_dkms_verbs="add build install uninstall unbuild remove status autoinstall match mktarball ldtarball
    generate_mok kernel_preinst kernel_postinst kernel_prerm conf plan cache mok event"
_dkms_tree_opts="--dkmstree --sourcetree --installtree"

# the options each verb takes (beyond -q --verbose --debug and the tree options)
_dkms_verb_opts() {
    case $1 in
        add) echo "-m -v -c --force --rpm_safe_upgrade" ;;
        build) echo "-m -v -k -a -c -j --force --force-version-override --kernelsourcedir --config --directive" ;;
        install) echo "-m -v -k -a -c -j --force --force-version-override --kernelsourcedir --config --directive
                       --no-depmod --modprobe-on-install --symlink-modules" ;;
        uninstall|unbuild|remove) echo "-m -v -k -a --all --rpm_safe_upgrade --no-depmod" ;;
        status) echo "-m -v -k -a --json" ;;
        autoinstall) echo "-k -a -j --force --no-depmod --modprobe-on-install" ;;
        match) echo "-k --templatekernel" ;;
        mktarball) echo "-m -v -k -a --all --archive --source-only --binaries-only" ;;
        ldtarball) echo "--archive --force" ;;
        kernel_preinst|kernel_postinst|kernel_prerm) echo "-k -a" ;;
        conf) echo "-k -a --raw --json" ;;
        plan) echo "-k -a -j --build --json" ;;
        cache) echo "--json" ;;
        mok) echo "--json" ;;
        generate_mok) echo "" ;;
        *) echo "-m -v -k -a -c -j --all --force --force-version-override --kernelsourcedir --config
                 --directive --archive --templatekernel --source-only --binaries-only --no-depmod
                 --modprobe-on-install --symlink-modules --rpm_safe_upgrade --json --raw --build
                 -V --version -h --help" ;;
    esac
}

# what `dkms event SOURCE` accepts next
_dkms_event_verbs() {
    case $1 in
        kernel-install) echo "add remove" ;;
        apt) echo "kernel-preinst kernel-postinst kernel-prerm headers-postinst source-configure source-remove
                   trigger post-invoke" ;;
        pacman) echo "install remove" ;;
        rpm) echo "post posttrans preun filetrigger-in filetrigger-un" ;;
        gentoo) echo "postinst prerm config" ;;
    esac
}

# NAME/VERSION of every source under the source tree that has a dkms.conf
_dkms_sources() {
    local conf dir base name
    for conf in "$_dkms_st"/*-*/dkms.conf; do
        [[ -f $conf ]] || continue
        dir=${conf%/dkms.conf}
        base=${dir##*/}
        # PACKAGE_NAME tells where the name ends when it has dashes itself
        name=$(sed -n "s/^[[:space:]]*PACKAGE_NAME=[\"']\{0,1\}\([^\"'\$[:space:]]*\).*/\1/p" "$conf" 2>/dev/null | head -n 1)
        if [[ -n $name && $base == "$name"-?* ]]; then
            echo "$name/${base#"$name"-}"
        else
            echo "${base%-*}/${base##*-}"
        fi
    done
}

# NAME/VERSION of every module version added to the dkms tree
_dkms_added() {
    local m v
    for m in "$_dkms_dt"/*/; do
        m=${m%/}
        [[ -d $m && ${m##*/} != .* ]] || continue
        for v in "$m"/*/; do
            v=${v%/}
            [[ ! -L $v && ( -e $v/source || -L $v/source ) ]] && echo "${m##*/}/${v##*/}"
        done
    done
}

_dkms_kernels() {
    local k
    for k in "$_dkms_it"/*/; do
        k=${k%/}
        [[ -d $k ]] && echo "${k##*/}"
    done
}

# the trees framework.conf (and its drop-ins) set, as plain assignments: NAME=VALUE lines
_dkms_framework_trees() {
    local f
    for f in "$1"/etc/dkms/framework.conf "$1"/etc/dkms/framework.conf.d/*.conf; do
        [[ -f $f ]] && sed -n "s/^[[:space:]]*\(dkms_tree\|source_tree\|install_tree\)=[\"']\{0,1\}\([^\"'\$[:space:]]*\).*/\1=\2/p" "$f"
    done
}

_dkms() {
    local words=() cword=0 i w join=0
    # merge the words bash split at '=' (--dkmstree=/x arrives as three words)
    for ((i = 0; i < ${#COMP_WORDS[@]}; i++)); do
        w=${COMP_WORDS[i]}
        if ((i > 0)) && [[ $w == "=" || $join == 1 ]]; then
            words[${#words[@]} - 1]+=$w
            [[ $w == "=" ]] && join=1 || join=0
        else
            words+=("$w")
            join=0
        fi
        ((i == COMP_CWORD)) && cword=$((${#words[@]} - 1))
    done
    local cur=${words[cword]} prev=""
    ((cword > 0)) && prev=${words[cword - 1]}
    if [[ $cur == --*=* ]]; then
        prev=${cur%%=*}
        cur=${cur#*=}
    fi

    local _dkms_dt _dkms_st _dkms_it root=${DKMS_HOOKS_SYSROOT%/}
    _dkms_dt=$root/var/lib/dkms _dkms_st=$root/usr/src _dkms_it=$root/lib/modules
    local name value
    while IFS='=' read -r name value; do
        case $name in
            dkms_tree) _dkms_dt=$value ;;
            source_tree) _dkms_st=$value ;;
            install_tree) _dkms_it=$value ;;
        esac
    done < <(_dkms_framework_trees "$root")
    local verb="" module="" event_at=0
    for ((i = 1; i < ${#words[@]}; i++)); do
        w=${words[i]}
        ((i == cword)) && continue
        case $w in
            --dkmstree=*) _dkms_dt=${w#*=} ;;
            --sourcetree=*) _dkms_st=${w#*=} ;;
            --installtree=*) _dkms_it=${w#*=} ;;
            --dkmstree) _dkms_dt=${words[i + 1]} ;;
            --sourcetree) _dkms_st=${words[i + 1]} ;;
            --installtree) _dkms_it=${words[i + 1]} ;;
            -m | --module) module=${words[i + 1]%%/*} ;;
            --module=*) module=${w#*=}; module=${module%%/*} ;;
            -*) ;;
            *)
                if [[ -z $verb ]] && [[ " $(echo $_dkms_verbs) " == *" $w "* ]]; then
                    verb=$w
                    [[ $verb == event ]] && event_at=$i
                elif [[ -n $verb && $verb != event && -z $module && $w == */* ]]; then
                    module=${w%%/*}
                fi
                ;;
        esac
    done

    case $prev in
        -m | --module)
            if [[ $verb == add ]]; then
                mapfile -t COMPREPLY < <(compgen -W "$(_dkms_sources | sed 's,/.*,,' | sort -u)" -- "$cur")
            else
                mapfile -t COMPREPLY < <(compgen -W "$(_dkms_added | sed 's,/.*,,' | sort -u)" -- "$cur")
            fi
            return 0 ;;
        -v)
            local list
            if [[ $verb == add ]]; then list=$(_dkms_sources); else list=$(_dkms_added); fi
            if [[ -n $module ]]; then
                list=$(printf '%s\n' "$list" | while IFS= read -r w; do [[ $w == "$module"/* ]] && echo "$w"; done)
            fi
            mapfile -t COMPREPLY < <(compgen -W "$(printf '%s\n' "$list" | sed 's,^[^/]*/,,' | sort -u)" -- "$cur")
            return 0 ;;
        -k | --kernelver | --templatekernel)
            mapfile -t COMPREPLY < <(compgen -W "$(_dkms_kernels)" -- "$cur")
            return 0 ;;
        -a | --arch)
            mapfile -t COMPREPLY < <(compgen -W "$(uname -m)" -- "$cur")
            return 0 ;;
        -c | --archive | --config)
            compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur")
            return 0 ;;
        --dkmstree | --sourcetree | --installtree | --kernelsourcedir)
            compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -d -- "$cur")
            return 0 ;;
        -j | --directive)
            return 0 ;;
    esac

    if [[ -z $verb ]]; then
        if [[ $cur == -* ]]; then
            mapfile -t COMPREPLY < <(compgen -W "$(_dkms_verb_opts '') -q --verbose $_dkms_tree_opts" -- "$cur")
        else
            mapfile -t COMPREPLY < <(compgen -W "$(echo $_dkms_verbs)" -- "$cur")
        fi
        return 0
    fi
    if [[ $verb == event ]]; then
        case $((cword - event_at)) in
            1) mapfile -t COMPREPLY < <(compgen -W "kernel-install apt pacman rpm gentoo" -- "$cur") ;;
            2) mapfile -t COMPREPLY < <(compgen -W "$(_dkms_event_verbs "${words[event_at + 1]}")" -- "$cur") ;;
            *) mapfile -t COMPREPLY < <(compgen -W "$(_dkms_kernels)" -- "$cur") ;;
        esac
        return 0
    fi
    if [[ $cur == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$(_dkms_verb_opts "$verb") -q --verbose $_dkms_tree_opts" -- "$cur")
        return 0
    fi
    case $verb in
        add)
            compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -W "$(_dkms_sources)" -- "$cur"; compgen -d -- "$cur") ;;
        build | install | uninstall | unbuild | remove | status | mktarball)
            mapfile -t COMPREPLY < <(compgen -W "$(_dkms_added)" -- "$cur") ;;
        ldtarball | conf)
            compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;
        cache)
            mapfile -t COMPREPLY < <(compgen -W "status prune clear" -- "$cur") ;;
        mok)
            mapfile -t COMPREPLY < <(compgen -W "status enroll" -- "$cur") ;;
    esac
    return 0
}

complete -F _dkms dkms
