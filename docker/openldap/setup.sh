#!/bin/sh
# Builds the example directory for docker/openldap/Dockerfile: slapd.conf
# from config/ldap/slapd.conf.template (memberOf by the dynlist overlay, the
# same file the integration tests use), the database loaded offline from
# config/ldap/example.ldif, everything owned by the user slapd runs as.
# Usage: setup.sh SOURCE_DIR TARGET_DIR USER ROOT_PASSWORD
#   SOURCE_DIR holds slapd.conf.template and example.ldif; TARGET_DIR gets
#   slapd.conf and data/ (and slapd's pid and args files at run time).
set -eu
src=$1 dir=$2 user=$3 rootpw=$4
mkdir -p "$dir/data"
hashed=$(slappasswd -s "$rootpw")
sed -e "s|@DIR@|$dir|" -e 's|@TLS@||' -e "s|@ROOTPW@|$hashed|" \
    "$src/slapd.conf.template" >"$dir/slapd.conf"
slapadd -f "$dir/slapd.conf" -l "$src/example.ldif"
# slaptest checks the configuration as slapd will read it.
slaptest -u -f "$dir/slapd.conf"
chown -R "$user:" "$dir"
chmod 0700 "$dir/data"
chmod 0600 "$dir/slapd.conf"
