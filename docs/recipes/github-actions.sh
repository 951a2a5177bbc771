#!/bin/sh
# The shell of a GitHub Actions step: generalize the image the job built,
# keep the report as an artifact, put the outcome in the job summary.
#
#   - name: Generalize
#     run: sh docs/recipes/github-actions.sh
#     env:
#       IMAGE: build/template.vhdx
#   - uses: actions/upload-artifact@v4
#     with: { name: reseal-report, path: build/template.vhdx.reseal.json }
set -eu
image="${IMAGE:?set IMAGE to the image to generalize}"
report="$image.reseal.json"

status=0
reseal generalize "$image" --json --report "$report" > reseal-stdout.json || status=$?
case $status in
    0) outcome=$(grep -m1 '"outcome"' "$report" | sed 's/.*"outcome": *"\([a-z_]*\)".*/\1/') ;;
    1) outcome="refused by preflight (see $report)" ;;
    2) outcome="bad input" ;;
    *) outcome="internal error" ;;
esac
rm -f reseal-stdout.json
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
    echo "reseal generalize $image: $outcome" >> "$GITHUB_STEP_SUMMARY"
fi
echo "reseal generalize $image: $outcome"
exit "$status"
