#!/usr/bin/env bash
# Prints the nginx binary to use: OpenResty when it is on PATH, else Debian's nginx.
if command -v openresty >/dev/null 2>&1; then command -v openresty; else echo /usr/sbin/nginx; fi
