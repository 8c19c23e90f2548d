# Copyright 2026 dkms-hooks authors
# Distributed under the terms of the GNU General Public License v2

EAPI=8

PYTHON_COMPAT=( python3_{11..13} )
DISTUTILS_USE_PEP517=setuptools
inherit distutils-r1 git-r3

DESCRIPTION="Drop-in dkms with parallel, crash-safe rebuilds and hooks for every package manager"
HOMEPAGE="https://example.invalid/dkms-hooks"
EGIT_REPO_URI="https://example.invalid/dkms-hooks.git"

LICENSE="GPL-2+"
SLOT="0"
IUSE="systemd"

RDEPEND="
	dev-python/pluggy[${PYTHON_USEDEP}]
	sys-apps/kmod
	dev-libs/openssl
	!sys-kernel/dkms
"

python_install_all() {
	distutils-r1_python_install_all
	insinto /usr/lib/kernel/install.d
	doins kernel-install.d/40-dkms-hooks.install
	fperms +x /usr/lib/kernel/install.d/40-dkms-hooks.install
	insinto /var/db/repos/local/eclass
	doins ebuild/eclass/dkms-hooks.eclass
}
