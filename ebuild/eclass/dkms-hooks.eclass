# Copyright 2026 dkms-hooks authors
# Distributed under the terms of the GNU General Public License v2

# @ECLASS: dkms-hooks.eclass
# @BLURB: build out-of-tree kernel modules with dkms-hooks, for every installed kernel
# @DESCRIPTION:
# Installs a module's source to /usr/src/${PN}-${PV} (writing a dkms.conf from
# DKMS_HOOKS_MODULES when the package ships none) and lets dkms-hooks build, sign and
# install it in pkg_postinst, and again for new kernels through the kernel hooks.
# pkg_config rebuilds for the running kernel.

case ${EAPI} in
	7|8) ;;
	*) die "${ECLASS}: EAPI ${EAPI:-0} not supported" ;;
esac

# @ECLASS_VARIABLE: DKMS_HOOKS_MODULES
# @DESCRIPTION:
# Array of "name:builddir:destdir", as linux-mod-r1's modlist: the module name, the
# directory (relative to the source) it is built in, and where it goes under
# /lib/modules/<kver>/ (default "extra"). Used only when the source has no dkms.conf.

# @ECLASS_VARIABLE: DKMS_HOOKS_MAKEARGS
# @DESCRIPTION:
# Extra arguments for make, added to the generated MAKE line.

RDEPEND="sys-kernel/dkms-hooks"

# @FUNCTION: dkms-hooks_write_conf
# @USAGE: <dir>
# @DESCRIPTION:
# Write <dir>/dkms.conf from DKMS_HOOKS_MODULES, passing the user's compiler and MAKEOPTS.
dkms-hooks_write_conf() {
	local dir=${1:?} i=0 entry name builddir dest
	local cc=$(tc-getCC 2>/dev/null || echo "${CC:-gcc}")
	{
		echo "PACKAGE_NAME=\"${PN}\""
		echo "PACKAGE_VERSION=\"${PV}\""
		echo "AUTOINSTALL=\"yes\""
		# single quotes keep ${kernel_source_dir} for dkms to expand per kernel
		echo "MAKE[0]=\"make ${MAKEOPTS} CC=${cc} ${DKMS_HOOKS_MAKEARGS} -C \${kernel_source_dir} M=\${dkms_tree}/${PN}/${PV}/build\""
		for entry in "${DKMS_HOOKS_MODULES[@]}"; do
			IFS=: read -r name builddir dest <<< "${entry}"
			echo "BUILT_MODULE_NAME[${i}]=\"${name}\""
			[[ -n ${builddir} && ${builddir} != . ]] && echo "BUILT_MODULE_LOCATION[${i}]=\"${builddir}\""
			echo "DEST_MODULE_LOCATION[${i}]=\"/${dest:-extra}\""
			i=$((i + 1))
		done
	} > "${dir}/dkms.conf" || die "${ECLASS}: cannot write ${dir}/dkms.conf"
}

# @FUNCTION: dkms-hooks_dopackage
# @USAGE: [source dir]
# @DESCRIPTION:
# Call from src_install: copy the source (default ${S}) to /usr/src/${PN}-${PV} in ${ED}.
dkms-hooks_dopackage() {
	local src=${1:-${S}}
	local dest="${ED%/}/usr/src/${PN}-${PV}"
	mkdir -p "${dest}" || die
	cp -pR "${src}/." "${dest}/" || die "${ECLASS}: copying the source failed"
	[[ -f ${dest}/dkms.conf ]] || dkms-hooks_write_conf "${dest}"
}

_dkms-hooks_dkms() {
	# a ROOT other than / (a chroot or image being built) is the root dkms-hooks works in
	if [[ ${ROOT:-/} != / ]]; then
		DKMS_HOOKS_SYSROOT="${ROOT%/}" dkms event gentoo "$@"
	else
		dkms event gentoo "$@"
	fi
}

# @FUNCTION: dkms-hooks_pkg_postinst
# @DESCRIPTION:
# Register the source and build it for KV_FULL (the configured kernel) and every other
# kernel with headers.
dkms-hooks_pkg_postinst() {
	_dkms-hooks_dkms postinst "${PN}" "${PV}" "${KV_FULL}" \
		|| die "${ECLASS}: building ${PN}-${PV} failed for a module marked critical"
}

# @FUNCTION: dkms-hooks_pkg_prerm
# @DESCRIPTION:
# Uninstall and unregister the module from every kernel. Portage runs the old copy's
# pkg_prerm after the new copy's pkg_postinst: when the new copy has the same PV (a
# reinstall, or a new revision: the dkms version is PV) that would remove what was just
# built, so it is kept; an upgrade or downgrade drops the old version only.
dkms-hooks_pkg_prerm() {
	[[ -n ${REPLACED_BY_VERSION} && ${REPLACED_BY_VERSION%-r[0-9]*} == "${PV}" ]] && return 0
	_dkms-hooks_dkms prerm "${PN}" "${PV}" || ewarn "${ECLASS}: removing ${PN}-${PV} reported a problem"
}

# @FUNCTION: dkms-hooks_pkg_config
# @DESCRIPTION:
# emerge --config: rebuild for the running kernel.
dkms-hooks_pkg_config() {
	_dkms-hooks_dkms config "${PN}" "${PV}" "$(uname -r)" || die "${ECLASS}: rebuild failed"
}

EXPORT_FUNCTIONS pkg_postinst pkg_prerm pkg_config
