# Packaging targets, included from the top Makefile. docs/packaging.md says what each proves.
#
#   make deb          build/deb/     pvemond + pvemond-client from the hand-written debian/
#   make deb-stdeb    build/stdeb/   the same code through stdeb (one package "pvemond")
#   make lint         lintian on all three .debs (clean but for debian/*.lintian-overrides)
#   make unit-check   systemd-analyze verify (no output allowed) + security exposure <= 5.0
#   make repo         build/repo/    signed flat apt repository + its keyring (throw-away key)
#   make test-system  the system ring: the repo installed with apt into booted bookworm and
#                     trixie containers, the service under systemd, purge; piuparts
#
# Every target installs the Debian packages it needs itself and can be run again at any time.

PKG_PATH      := /usr/sbin:/usr/bin:/sbin:/bin
PKG_PY        := /usr/bin/python3
PKG_BUILD     := $(CURDIR)/build
PKG_GNUPGHOME := $(PKG_BUILD)/gnupg
PKG_KEYRING   := pvemond-archive-keyring.gpg
# Exposure score limit for systemd-analyze security, x10 (50 = 5.0).
PKG_EXPOSURE  := 50

PKG_DEPS_BUILD  := dpkg-dev debhelper dh-python python3-all python3-setuptools fakeroot \
                   python3-pytest python3-flask python3-sh python3-yaml gunicorn
PKG_DEPS_STDEB  := $(PKG_DEPS_BUILD) python3-stdeb
PKG_DEPS_LINT   := lintian man-db
PKG_DEPS_UNIT   := systemd gunicorn
PKG_DEPS_REPO   := apt-utils gnupg
PKG_DEPS_SYSTEM := debootstrap systemd-container piuparts python3-pytest util-linux tar

# $(call pkg-apt,PACKAGES): install those not installed yet (one apt-get update at most).
define pkg-apt
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	    | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "apt: installing" $$missing; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
endef

.PHONY: deb deb-stdeb lint unit-check repo test-system

deb:
	$(call pkg-apt,$(PKG_DEPS_BUILD))
	rm -rf $(PKG_BUILD)/deb && mkdir -p $(PKG_BUILD)/deb
	# dpkg-buildpackage writes into the parent directory; -tc cleans the tree afterwards.
	cd $(CURDIR) && env PATH=$(PKG_PATH) dpkg-buildpackage -us -uc -b -tc
	v=$$(dpkg-parsechangelog -l $(CURDIR)/debian/changelog -S Version) && cd $(CURDIR)/.. && \
	    mv pvemond_$${v}_all.deb pvemond-client_$${v}_all.deb pvemond_$${v}_*.buildinfo \
	    pvemond_$${v}_*.changes $(PKG_BUILD)/deb/
	@ls -l $(PKG_BUILD)/deb

# stdeb builds from an sdist, so it gets a copy of the tree with a MANIFEST.in that carries the
# hand-written unit, postrm, copyright and lintian overrides (debian/stdeb/ has its own .install
# and .manpages: one package holds everything). stdeb writes control, rules, changelog and
# debian/source/ itself.
deb-stdeb:
	$(call pkg-apt,$(PKG_DEPS_STDEB))
	rm -rf $(PKG_BUILD)/stdeb $(PKG_BUILD)/stdeb-src
	mkdir -p $(PKG_BUILD)/stdeb $(PKG_BUILD)/stdeb-src/debian
	cd $(CURDIR) && tar --exclude=__pycache__ -cf - setup.py setup.cfg stdeb.cfg README.md \
	    pytest.ini pvemond etc man systemd tests | tar -C $(PKG_BUILD)/stdeb-src -xf -
	cp $(CURDIR)/debian/stdeb/MANIFEST.in $(PKG_BUILD)/stdeb-src/
	cp $(CURDIR)/debian/copyright $(CURDIR)/debian/pvemond.postrm $(CURDIR)/debian/pvemond.docs \
	    $(CURDIR)/debian/pybuild.testfiles $(CURDIR)/debian/launchers.py \
	    $(CURDIR)/debian/stdeb/pvemond.install $(CURDIR)/debian/stdeb/pvemond.manpages \
	    $(PKG_BUILD)/stdeb-src/debian/
	cp -L $(CURDIR)/debian/pvemond.service $(PKG_BUILD)/stdeb-src/debian/
	cat $(CURDIR)/debian/pvemond.lintian-overrides $(CURDIR)/debian/stdeb/pvemond.lintian-overrides \
	    > $(PKG_BUILD)/stdeb-src/debian/pvemond.lintian-overrides
	cd $(PKG_BUILD)/stdeb-src && env PATH=$(PKG_PATH) $(PKG_PY) setup.py \
	    --command-packages=stdeb.command bdist_deb
	cp $(PKG_BUILD)/stdeb-src/deb_dist/*.deb $(PKG_BUILD)/stdeb/
	@ls -l $(PKG_BUILD)/stdeb

# --fail-on with every level: an unexplained tag of any severity fails; explained ones are in
# debian/*.lintian-overrides (and debian/stdeb/ for the stdeb build) with their reason.
# package-contains-documentation-outside-usr-share-doc is suppressed because lintian 2.116 masks
# it itself for egg-info metadata (screen python/egg/metadata) yet still counts the masked hint
# for --fail-on info.
PKG_LINTIAN := lintian --display-info --pedantic --fail-on error,warning,info,pedantic \
               --suppress-tags package-contains-documentation-outside-usr-share-doc

lint: deb deb-stdeb
	$(call pkg-apt,$(PKG_DEPS_LINT))
	$(PKG_LINTIAN) $(PKG_BUILD)/deb/*.deb
	$(PKG_LINTIAN) $(PKG_BUILD)/stdeb/*.deb
	# The man pages must know every option the commands' --help shows.
	env PATH=$(PKG_PATH) PYTHONPATH=$(CURDIR) $(PKG_PY) $(CURDIR)/tests/system/manpages.py $(CURDIR)
	@echo "lint: clean"

unit-check:
	$(call pkg-apt,$(PKG_DEPS_UNIT))
	@out=$$(cd $(CURDIR) && systemd-analyze verify --man=no systemd/pvemond.service 2>&1); \
	if [ -n "$$out" ]; then echo "$$out"; echo "unit-check: systemd-analyze verify complained"; exit 1; fi
	@cd $(CURDIR) && out=$$(systemd-analyze security --offline=true --threshold=$(PKG_EXPOSURE) \
	    systemd/pvemond.service 2>&1); rc=$$?; echo "$$out" | tail -1; \
	if [ $$rc -ne 0 ]; then echo "$$out"; echo "unit-check: exposure above $(PKG_EXPOSURE)/10"; exit 1; fi
	@echo "unit-check: verify clean, exposure within $(PKG_EXPOSURE)/10"

# A flat repository (deb [signed-by=...] URI ./) signed with a throw-away key that lives in
# build/gnupg (made once, no passphrase). Release.gpg + InRelease; the public key is exported as
# build/repo/$(PKG_KEYRING) for signed-by=.
repo: deb
	$(call pkg-apt,$(PKG_DEPS_REPO))
	mkdir -p $(PKG_GNUPGHOME) && chmod 0700 $(PKG_GNUPGHOME)
	@if ! GNUPGHOME=$(PKG_GNUPGHOME) gpg --batch --list-secret-keys --with-colons 2>/dev/null \
	        | grep -q '^sec:u:'; then \
	    echo "repo: generating the throw-away test signing key (none yet, or expired)"; \
	    rm -rf $(PKG_GNUPGHOME) && mkdir -m 0700 $(PKG_GNUPGHOME); \
	    GNUPGHOME=$(PKG_GNUPGHOME) gpg --batch --quiet --passphrase '' --quick-gen-key \
	        'pvemond test repository (throw-away) <pvemond-test@example.org>' ed25519 sign 1y; \
	fi
	rm -rf $(PKG_BUILD)/repo && mkdir -p $(PKG_BUILD)/repo
	cp $(PKG_BUILD)/deb/*.deb $(PKG_BUILD)/repo/
	cd $(PKG_BUILD)/repo && apt-ftparchive packages . > Packages && gzip -9kn Packages
	cd $(PKG_BUILD)/repo && apt-ftparchive \
	    -o APT::FTPArchive::Release::Origin=pvemond -o APT::FTPArchive::Release::Label=pvemond \
	    -o APT::FTPArchive::Release::Suite=stable -o APT::FTPArchive::Release::Codename=pvemond \
	    -o APT::FTPArchive::Release::Description='pvemond test repository' \
	    release . > Release.tmp && mv Release.tmp Release
	cd $(PKG_BUILD)/repo && GNUPGHOME=$(PKG_GNUPGHOME) gpg --batch --yes --quiet \
	    --clearsign -o InRelease Release
	cd $(PKG_BUILD)/repo && GNUPGHOME=$(PKG_GNUPGHOME) gpg --batch --yes --quiet \
	    --detach-sign --armor -o Release.gpg Release
	GNUPGHOME=$(PKG_GNUPGHOME) gpg --batch --yes --export -o $(PKG_BUILD)/repo/$(PKG_KEYRING)
	# Check the signature with the exported keyring alone, as apt will.
	gpgv --keyring $(PKG_BUILD)/repo/$(PKG_KEYRING) $(PKG_BUILD)/repo/InRelease
	-GNUPGHOME=$(PKG_GNUPGHOME) gpgconf --kill gpg-agent
	chmod -R a+rX $(PKG_BUILD)/repo
	@ls -l $(PKG_BUILD)/repo

test-system: repo
	$(call pkg-apt,$(PKG_DEPS_SYSTEM))
	cd $(CURDIR) && env PATH=$(PKG_PATH) PVEMOND_REPO=$(PKG_BUILD)/repo \
	    $(PKG_PY) -m pytest tests/system -q $(PYTEST_ARGS)
