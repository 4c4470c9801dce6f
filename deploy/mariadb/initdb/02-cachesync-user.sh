# shellcheck shell=bash
# Creates the CDC user cachesync reads the binlog as, with exactly the grants it documents:
# REPLICATION SLAVE, REPLICATION CLIENT, SELECT (10.11 shows REPLICATION CLIENT as BINLOG MONITOR).
#
# The password comes from CACHESYNC_DB_PASSWORD, which a plain .sql init file could not read. This
# file is deliberately NOT executable: the MariaDB image's entrypoint then sources it instead of
# running it, which gives it the entrypoint's docker_process_sql (root over the init socket) and
# docker_sql_escape_string_literal helpers. Runs once, on first initialisation of the data volume.

if ! declare -F docker_process_sql >/dev/null; then
  echo "02-cachesync-user.sh must be sourced by the MariaDB entrypoint; remove its executable bit" >&2
  exit 1
fi

: "${CACHESYNC_DB_USER:=cachesync}"
if [ -z "${CACHESYNC_DB_PASSWORD:-}" ]; then
  mysql_error "CACHESYNC_DB_PASSWORD is empty: set it to the password of the ${CACHESYNC_DB_USER} CDC user"
fi

mysql_note "Creating CDC user ${CACHESYNC_DB_USER}@'%'"
cachesync_user_escaped="$(docker_sql_escape_string_literal "${CACHESYNC_DB_USER}")"
cachesync_password_escaped="$(docker_sql_escape_string_literal "${CACHESYNC_DB_PASSWORD}")"
docker_process_sql --binary-mode <<-EOSQL
	-- Keep the password out of the binlog the CDC user itself reads.
	SET @@SESSION.SQL_LOG_BIN = 0;
	CREATE USER IF NOT EXISTS '${cachesync_user_escaped}'@'%' IDENTIFIED BY '${cachesync_password_escaped}';
	GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO '${cachesync_user_escaped}'@'%';
EOSQL
unset cachesync_user_escaped cachesync_password_escaped
