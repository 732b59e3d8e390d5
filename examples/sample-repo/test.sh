#!/bin/sh
# The greeting tool's checks; exits non-zero on the first failure.
set -e
[ "$(sh greet.sh)" = "Hello, world!" ]
[ "$(sh greet.sh swarm)" = "Hello, swarm!" ]
echo "all checks passed"
