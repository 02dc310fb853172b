# device-setup.sh - source on a machine that lacks the build dependencies
# (the lent GPU machine has no package registry): unpacks Debian packages
# carried in .carry/debs (apt-get download libzstd-dev libzstd1 zstd check
# libsubunit-dev libsubunit0) into /tmp/sys, puts their zstd on PATH, and sets
# GPT_MAKEVARS, an array of the make variables that build against them (static libraries).
#   . tools/device-setup.sh && make "${GPT_MAKEVARS[@]}"
GPT_MAKEVARS=()
if ! echo '#include <zstd.h>' | cc -E -x c - >/dev/null 2>&1 || ! echo '#include <check.h>' | cc -E -x c - >/dev/null 2>&1 || ! command -v zstd >/dev/null; then
	mkdir -p /tmp/sys
	for f in .carry/debs/*.deb; do dpkg -x "$f" /tmp/sys; done
	L=/tmp/sys/usr/lib/x86_64-linux-gnu
	export PATH="/tmp/sys/usr/bin:$PATH" LD_LIBRARY_PATH="$L${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
	GPT_MAKEVARS=(PKG_CFLAGS=-I/tmp/sys/usr/include "PKG_LIBS=$L/libzstd.a" CHECK_CFLAGS=-I/tmp/sys/usr/include
		"CHECK_LIBS=$L/libcheck.a $L/libsubunit.a -lrt -lm")
	echo "device-setup: using the carried packages in /tmp/sys" >&2
fi
