#!/bin/sh
# Greets NAME (default: world).
name=${1:-world}
echo "Hello, $name!"
