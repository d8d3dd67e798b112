#!/usr/bin/env bash
# Builds containers/Dockerfile where no registry can be reached, runs the demo inside the image and
# turns the image into an Enroot squashfs file, on Debian 12 as root:
#
#   1. debootstrap a minimal Debian 12 root filesystem and import it into Podman as the base image;
#   2. podman build -f containers/Dockerfile --build-arg BASE=<that image>  (the CPU backend: a plain
#      Debian base has no CUDA or NCCL);
#   3. podman run ... scripts/demo.sh  (the tiny model: train, then generate);
#   4. the image's root filesystem, with its environment in /etc/environment as `enroot import`
#      writes it, packed by mksquashfs into adapt.sqsh, then checked by running adapt_train from it.
#
#   containers/build_offline.sh [WORKDIR]     (default /tmp/adapt-container; about 40 minutes on 2 cores)
#
# Installs debootstrap, podman, runc and squashfs-tools with apt when missing; needs a Debian mirror.
# Podman runs with runc (crun rejects hybrid cgroup hierarchies), host networking and explicit
# ulimits (a process without CAP_SYS_RESOURCE cannot raise them to Podman's defaults).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(realpath -m "${1:-/tmp/adapt-container}")
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$work"
say() { printf '[build_offline %(%T)T] %s\n' -1 "$*"; }

need=()
for p in debootstrap podman runc squashfs-tools uidmap; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  say "installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
podman=(podman --runtime runc)
run_opts=(--network=host --ulimit nofile=4096:4096 --ulimit nproc=4096:4096)

if ! "${podman[@]}" image exists localhost/debian12:base; then
  say "1. debootstrap Debian 12 into $work/rootfs"
  [ -x "$work/rootfs/usr/bin/apt-get" ] || debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log"
  tar -C "$work/rootfs" -c . | "${podman[@]}" import - localhost/debian12:base
fi

say "2. podman build (BASE=localhost/debian12:base)"
nice -n 19 "${podman[@]}" build "${run_opts[@]}" -f containers/Dockerfile --build-arg BASE=localhost/debian12:base \
  --build-arg JOBS="$(nproc)" -t localhost/adapt:cpu .

say "3. scripts/demo.sh inside the image"
"${podman[@]}" run --rm "${run_opts[@]}" localhost/adapt:cpu ./scripts/demo.sh

say "4. $work/adapt.sqsh"
rm -rf "$work/sqsh-root" "$work/adapt.sqsh"
mkdir -p "$work/sqsh-root"
ctr=$("${podman[@]}" create localhost/adapt:cpu true)
"${podman[@]}" export "$ctr" | tar -C "$work/sqsh-root" -x
"${podman[@]}" rm "$ctr" >/dev/null
"${podman[@]}" image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' localhost/adapt:cpu |
  sed '/^$/d' >"$work/sqsh-root/etc/environment"
mksquashfs "$work/sqsh-root" "$work/adapt.sqsh" -comp lzo -noD -all-root -quiet -no-progress
rm -rf "$work/sqsh-root"
mkdir -p "$work/mnt"
mount -t squashfs -o loop,ro "$work/adapt.sqsh" "$work/mnt"
trap 'umount "$work/mnt"' EXIT
# shellcheck disable=SC2046  # one VAR=value word per line of /etc/environment
env -i $(cat "$work/mnt/etc/environment") chroot "$work/mnt" adapt_train --help >"$work/help.txt"
head -n 1 "$work/help.txt"
say "done: $work/adapt.sqsh ($(du -h "$work/adapt.sqsh" | cut -f1)); run it with Enroot or Pyxis (README.md, Containers)"
