#!/bin/sh
# Debian bug 980609: gcc 10's x86 plugin header `config/i386/i386.h` includes
# `common/config/i386/i386-cpuinfo.h`, which gcc-10-plugin-dev does not ship, so odb (a gcc
# plugin) cannot compile on x86_64. Ship the header beside i386.h and point the include at it.
# Other architectures do not include it and are left alone.
set -eu
[ "$(uname -m)" = x86_64 ] || exit 0
plugin_include=$(gcc -print-file-name=plugin)/include
header="$plugin_include/config/i386/i386.h"
grep -q 'common/config/i386/i386-cpuinfo.h' "$header" || exit 0
cp "$(dirname "$0")/i386-cpuinfo.h" "$plugin_include/config/i386/i386-cpuinfo.h"
sed -i 's|common/config/i386/i386-cpuinfo.h|config/i386/i386-cpuinfo.h|' "$header"
