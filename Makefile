# Install dkms-hooks the way a distribution package lays it out:
#
#   make install DESTDIR=/tmp/stage [PREFIX=/usr] [DISTRO=all|debian|arch|fedora|gentoo]
#
# Always: the dkms command, the Python package (a plain copy plus a dist-info, no pip or
# network), the man page and the bash and zsh completions. DISTRO picks the host hooks
# (all = every one). Each directory can be overridden (PYTHONDIR=%{python3_sitelib}...).

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
PREFIX ?= /usr
DISTRO ?= all
PYTHON ?= python3
#: the interpreter the dkms command runs with, on the target system
PYTHON_SHEBANG ?= /usr/bin/python3
SYSCONFDIR ?= /etc
BINDIR ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
LIBDIR ?= $(PREFIX)/lib
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
BASHCOMPDIR ?= $(DATADIR)/bash-completion/completions
KERNELINSTALLDIR ?= $(LIBDIR)/kernel/install.d
ALPMHOOKDIR ?= $(DATADIR)/libalpm/hooks
RPMMACRODIR ?= $(LIBDIR)/rpm/macros.d
PKGDATADIR ?= $(DATADIR)/dkms-hooks
SYSTEMDUNITDIR ?= $(LIBDIR)/systemd/system
INITDIR ?= $(SYSCONFDIR)/init.d

ifeq ($(DISTRO),debian)
# Debian's python3 looks in dist-packages only; dh_python3 puts pure modules here
PYTHONDIR ?= $(PREFIX)/lib/python3/dist-packages
ZSHCOMPDIR ?= $(DATADIR)/zsh/vendor-completions
else
PYTHONDIR ?= $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_path("purelib", "posix_prefix", {"base": "$(PREFIX)"}))')
ZSHCOMPDIR ?= $(DATADIR)/zsh/site-functions
endif

# Debian's /etc/kernel/*.d hooks take the names of Debian's dkms package's own, which this
# package replaces: its left-over conffiles would otherwise run a second autoinstall.
ifeq ($(DISTRO),debian)
KERNEL_HOOK_NAME ?= dkms
else
KERNEL_HOOK_NAME ?= dkms-hooks
endif

PYFILES := $(shell find dkms_hooks -type f \( -name '*.py' -o -name '*.bash' -o -name py.typed \) \
	-not -path '*/__pycache__/*' | LC_ALL=C sort)
DISTINFO := dkms_hooks-$(VERSION).dist-info

INSTALL ?= install
INSTALL_DATA := $(INSTALL) -m 0644
INSTALL_PROGRAM := $(INSTALL) -m 0755

.PHONY: all install install-common install-python install-debian install-arch install-fedora \
	install-gentoo install-kernel-install install-systemd install-openrc check-distro

all:
	@echo "Nothing to build. Run: make install DESTDIR=... [DISTRO=all|debian|arch|fedora|gentoo]"

check-distro:
	@case "$(DISTRO)" in all|debian|arch|fedora|gentoo) ;; \
	 *) echo "DISTRO must be all, debian, arch, fedora or gentoo (not '$(DISTRO)')" >&2; exit 2;; esac
	@test -n "$(PYTHONDIR)" || { echo "PYTHONDIR is empty: set PYTHON or PYTHONDIR" >&2; exit 2; }

ifeq ($(DISTRO),all)
install: install-common install-debian install-arch install-fedora install-gentoo
else
install: install-common install-$(DISTRO)
endif

install-common: check-distro install-python
	$(INSTALL) -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR)
	printf '#!%s\nfrom dkms_hooks.cli.main import entry\n\nentry()\n' '$(PYTHON_SHEBANG)' \
		> $(DESTDIR)$(SBINDIR)/dkms
	chmod 0755 $(DESTDIR)$(SBINDIR)/dkms
	if [ "$(SBINDIR)" != "$(BINDIR)" ]; then ln -sfr $(DESTDIR)$(SBINDIR)/dkms $(DESTDIR)$(BINDIR)/dkms; fi
	$(INSTALL) -d $(DESTDIR)$(SYSCONFDIR)/dkms/framework.conf.d
	$(INSTALL) -D -m 0644 docs/dkms.8 $(DESTDIR)$(MANDIR)/man8/dkms.8
	$(INSTALL) -D -m 0644 completions/dkms.bash $(DESTDIR)$(BASHCOMPDIR)/dkms
	$(INSTALL) -D -m 0644 completions/_dkms $(DESTDIR)$(ZSHCOMPDIR)/_dkms

install-python:
	for f in $(PYFILES); do $(INSTALL) -D -m 0644 $$f $(DESTDIR)$(PYTHONDIR)/$$f || exit 1; done
	$(INSTALL) -d $(DESTDIR)$(PYTHONDIR)/$(DISTINFO)
	printf 'Metadata-Version: 2.1\nName: dkms-hooks\nVersion: %s\nRequires-Python: >=3.9\nRequires-Dist: pluggy>=0.13\nRequires-Dist: tomli>=1.1; python_version < "3.11"\n' \
		'$(VERSION)' > $(DESTDIR)$(PYTHONDIR)/$(DISTINFO)/METADATA
	printf 'dkms_hooks\n' > $(DESTDIR)$(PYTHONDIR)/$(DISTINFO)/top_level.txt
	printf 'make\n' > $(DESTDIR)$(PYTHONDIR)/$(DISTINFO)/INSTALLER

install-kernel-install:
	$(INSTALL) -D -m 0755 kernel-install.d/40-dkms-hooks.install $(DESTDIR)$(KERNELINSTALLDIR)/40-dkms-hooks.install

# The boot-time catch-up: a systemd unit ordered before systemd-modules-load, and an OpenRC
# service before Gentoo's modules service; both run `dkms event boot`.
install-systemd:
	$(INSTALL) -d $(DESTDIR)$(SYSTEMDUNITDIR)
	sed 's|@SBINDIR@|$(SBINDIR)|g' hooks/systemd/dkms-hooks.service.in > $(DESTDIR)$(SYSTEMDUNITDIR)/dkms-hooks.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/dkms-hooks.service

install-openrc:
	$(INSTALL) -d $(DESTDIR)$(INITDIR)
	sed 's|@SBINDIR@|$(SBINDIR)|g' hooks/openrc/dkms-hooks.in > $(DESTDIR)$(INITDIR)/dkms-hooks
	chmod 0755 $(DESTDIR)$(INITDIR)/dkms-hooks

# Debian and Ubuntu: run-parts kernel hooks, APT's Post-Invoke, the helpers that dh_dkms
# postinst scripts call by path, and the snippets for module source packages. The dpkg
# trigger (hooks/dpkg/triggers, postinst) belongs in the package's control area.
install-debian: install-systemd
	for d in preinst postinst prerm header_postinst; do \
		$(INSTALL) -D -m 0755 hooks/kernel/$$d.d/dkms-hooks $(DESTDIR)$(SYSCONFDIR)/kernel/$$d.d/$(KERNEL_HOOK_NAME) || exit 1; \
	done
	$(INSTALL) -D -m 0644 apt.conf.d/90dkms-hooks $(DESTDIR)$(SYSCONFDIR)/apt/apt.conf.d/90dkms-hooks
	for h in dkms_autoinstaller common.postinst; do \
		$(INSTALL) -d $(DESTDIR)$(LIBDIR)/dkms; \
		printf '#!/bin/sh\n# installed by dkms-hooks\nexec %s -m dkms_hooks.cli.debian %s "$$@"\n' \
			'$(PYTHON_SHEBANG)' $$h > $(DESTDIR)$(LIBDIR)/dkms/$$h; \
		chmod 0755 $(DESTDIR)$(LIBDIR)/dkms/$$h; \
	done
	$(INSTALL) -D -m 0644 hooks/dpkg/module-source.postinst $(DESTDIR)$(PKGDATADIR)/dpkg/module-source.postinst
	$(INSTALL) -D -m 0644 hooks/dpkg/module-source.prerm $(DESTDIR)$(PKGDATADIR)/dpkg/module-source.prerm

install-arch: install-kernel-install install-systemd
	$(INSTALL) -D -m 0644 pacman.d/hooks/70-dkms-hooks-install.hook $(DESTDIR)$(ALPMHOOKDIR)/70-dkms-hooks-install.hook
	$(INSTALL) -D -m 0644 pacman.d/hooks/71-dkms-hooks-remove.hook $(DESTDIR)$(ALPMHOOKDIR)/71-dkms-hooks-remove.hook

install-fedora: install-kernel-install install-systemd
	$(INSTALL) -D -m 0644 hooks/rpm/macros.dkms-hooks $(DESTDIR)$(RPMMACRODIR)/macros.dkms-hooks
	$(INSTALL) -D -m 0644 hooks/rpm/dkms-hooks-triggers.spec.in $(DESTDIR)$(PKGDATADIR)/rpm/dkms-hooks-triggers.spec.in

# Gentoo: eclasses live in a repository, so the eclass is shipped for an overlay to take
install-gentoo: install-kernel-install install-systemd install-openrc
	$(INSTALL) -D -m 0644 ebuild/eclass/dkms-hooks.eclass $(DESTDIR)$(PKGDATADIR)/eclass/dkms-hooks.eclass
