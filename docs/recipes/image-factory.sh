#!/bin/sh
# An image factory: generalize a template once, then give every machine its
# own identity (machine SID, computer name, MachineGuid) before it boots.
#
#   sh docs/recipes/image-factory.sh TEMPLATE OUT NAME...
#
# TEMPLATE is a directory holding a Windows root or a disk image (VHDX, VHD,
# raw, qcow2, VMDK). OUT receives the machines (OUT/machines/NAME[.ext],
# with OUT/machines.json describing them) and the reports.
set -eu
template="$1"
out="$2"
shift 2
[ "$#" -gt 0 ] || { echo "usage: $0 TEMPLATE OUT NAME..." >&2; exit 2; }
mkdir -p "$out"

# 1. Once: generalize the template (a second run finds nothing to do).
reseal generalize "$template" --report "$out/generalize.json"

# 2. Per machine, in one call: clones of the template, each stamped with
#    its name and a new SID (linked clones for VHD/VHDX/qcow2).
names=$(printf '%s,' "$@")
reseal stamp "$template" --out "$out/machines" --names "${names%,}" --json > "$out/machines.json"

# 3. Copies made by something else (a hypervisor clone, a storage
#    snapshot, here cp) are personalized one by one, in place.
first="$1"
case "$template" in
    */) template=${template%/} ;;
esac
if [ -d "$template" ]; then
    copy="$out/copy-of-$first"
    cp -a "$template" "$copy"
else
    copy="$out/copy-of-$first.${template##*.}"
    cp --sparse=always "$template" "$copy"
fi
reseal personalize "$copy" --name "$first-B" --report "$out/personalize.json"
echo "machines in $out/machines, described in $out/machines.json; $copy personalized"
