#!/bin/sh
# Builds an image archive holding Debian's static busybox, for machines with
# no registry: an OCI image layout, or with --docker a Docker archive (the
# `docker save` format).
# Usage: busybox-oci.sh [--docker] OUT.tar [IMAGE-NAME]
# The image is named docker.io/library/busybox:latest unless told otherwise.
set -eu
format=oci
if [ "${1:-}" = --docker ]; then format=docker; shift; fi
out=$1
name=${2:-docker.io/library/busybox:latest}
busybox=$(command -v busybox || true)
[ -n "$busybox" ] && "$busybox" --list >/dev/null 2>&1 || { echo "busybox-static is needed (apt-get install busybox-static)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs/bin" "$work/rootfs/etc" "$work/rootfs/tmp" "$work/rootfs/root" \
         "$work/layout/blobs/sha256"
cp "$busybox" "$work/rootfs/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$work/rootfs/bin/$applet"
done
chmod 1777 "$work/rootfs/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$work/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$work/rootfs/etc/group"

# Layer: an uncompressed tar with fixed owners and times, so that the same
# busybox always gives the same digests.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
    -C "$work/rootfs" -cf "$work/layer.tar" .
blob() { # file -> prints "digest size" and stores the blob
    d=$(sha256sum "$1" | cut -d' ' -f1)
    cp "$1" "$work/layout/blobs/sha256/$d"
    echo "$d $(stat -c %s "$1")"
}
set -- $(blob "$work/layer.tar"); layer=$1; layer_size=$2
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
cat > "$work/config.json" <<JSON
{"architecture":"$arch","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:$layer"]}}
JSON
set -- $(blob "$work/config.json"); config=$1; config_size=$2
cat > "$work/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$config","size":$config_size},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:$layer","size":$layer_size}]}
JSON
set -- $(blob "$work/manifest.json"); manifest=$1; manifest_size=$2
cat > "$work/layout/index.json" <<JSON
{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$manifest","size":$manifest_size,"annotations":{"io.containerd.image.name":"$name","org.opencontainers.image.ref.name":"$name"}}]}
JSON
echo '{"imageLayoutVersion":"1.0.0"}' > "$work/layout/oci-layout"
if [ "$format" = docker ]; then
    rm -rf "$work/layout"
    mkdir -p "$work/layout/$layer"
    cp "$work/layer.tar" "$work/layout/$layer/layer.tar"
    cp "$work/config.json" "$work/layout/$config.json"
    printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]\n' \
        "$config" "$name" "$layer" > "$work/layout/manifest.json"
fi
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$work/layout" -cf "$out.tmp" .
mv "$out.tmp" "$out"
