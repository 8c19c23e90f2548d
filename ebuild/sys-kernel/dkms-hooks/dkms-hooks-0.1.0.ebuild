# Copyright 2026 dkms-hooks authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

PYTHON_COMPAT=( python3_{9..13} )
inherit python-single-r1

DESCRIPTION="Drop-in dkms with parallel, crash-safe rebuilds and hooks for every package manager"
HOMEPAGE="https://example.invalid/dkms-hooks"
if [[ ${PV} == 9999 ]]; then
	inherit git-r3
	EGIT_REPO_URI="https://example.invalid/dkms-hooks.git"
else
	SRC_URI="https://example.invalid/dkms-hooks/archive/v${PV}.tar.gz -> ${P}.tar.gz"
	KEYWORDS="~amd64 ~arm64"
fi

LICENSE="GPL-2+"
SLOT="0"
REQUIRED_USE="${PYTHON_REQUIRED_USE}"

RDEPEND="
	${PYTHON_DEPS}
	$(python_gen_cond_dep 'dev-python/pluggy[${PYTHON_USEDEP}]')
	$(python_gen_cond_dep 'dev-python/tomli[${PYTHON_USEDEP}]' python3_{9,10})
	app-shells/bash
	sys-apps/kmod
	sys-devel/patch
	dev-build/make
	dev-libs/openssl
	!sys-kernel/dkms
"
BDEPEND="${PYTHON_DEPS}"

src_compile() {
	# pure Python and shell: nothing to build
	:
}

src_install() {
	# the eclass goes to /usr/share/dkms-hooks/eclass, for an overlay to take
	emake install DESTDIR="${D}" DISTRO=gentoo PREFIX="${EPREFIX}/usr" \
		PYTHON="${EPYTHON}" PYTHON_SHEBANG="${PYTHON}" PYTHONDIR="$(python_get_sitedir)"
	python_optimize
	einstalldocs
}
