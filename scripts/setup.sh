#!/usr/bin/env bash
# What a build needs beyond Rust: `nasm`, with which libjpeg-turbo (the mozjpeg crate) builds its
# SIMD JPEG decoder. Without it the build silently takes the C fallback, and decoding a photo costs
# 3.3-4.0 ms instead of 2.0 ms (same pixels either way). Installs it with apt-get when missing
# (as root, or through sudo), and rebuilds mozjpeg-sys if an earlier build went without it.
set -euo pipefail
cd "$(dirname "$0")/.."
case "$(uname -m)" in
  x86_64|i?86) ;;
  *) exit 0 ;; # ARM's SIMD is C intrinsics: no assembler needed
esac
if ! command -v nasm >/dev/null; then
  echo "setup: installing nasm (SIMD JPEG decoding) ..." >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if command -v apt-get >/dev/null && { [ -z "$sudo" ] || command -v sudo >/dev/null; }; then
    $sudo apt-get install -y -qq nasm >/dev/null 2>&1 ||
      { $sudo apt-get update -qq >/dev/null 2>&1 && $sudo apt-get install -y -qq nasm >/dev/null 2>&1; } || true
  fi
  if ! command -v nasm >/dev/null; then
    echo "warning: nasm is not installed and could not be installed here: JPEG decoding will be" >&2
    echo "         built without SIMD (slower, same results). Install nasm and rerun." >&2
    exit 0
  fi
  # A build made without nasm stays without SIMD until mozjpeg-sys is rebuilt.
  if ls target/*/build/mozjpeg-sys-* >/dev/null 2>&1; then
    cargo clean -p mozjpeg-sys >/dev/null 2>&1 || true
  fi
fi
