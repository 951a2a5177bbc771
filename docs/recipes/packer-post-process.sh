#!/bin/sh
# Packer post-processor (shell-local): generalize the disk image or WIM the
# build produced, in place, before it is published. The build fails when
# reseal refuses the image (exit 1), cannot read it (2) or fails (3).
#
#   post-processor "shell-local" {
#     environment_vars = ["IMAGE=${var.output_dir}/${var.vm_name}.vhdx"]
#     script           = "docs/recipes/packer-post-process.sh"
#   }
set -eu
image="${IMAGE:?set IMAGE to the artifact (VHDX, VHD, raw, qcow2, VMDK or WIM)}"
report="${REPORT:-$image.reseal.json}"

# What is in the image, and whether preflight accepts it.
reseal inspect "$image"
# Generalize; the JSON report stays beside the artifact.
reseal generalize "$image" --report "$report"
echo "generalized $image (report: $report)"
