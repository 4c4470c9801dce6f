-- Demo schema for the docker-compose stack: the tables config/cachesync.yaml maps.
-- Runs once, when the MariaDB data volume is first initialised (docker-entrypoint-initdb.d).
-- The server already runs with binlog_row_metadata=FULL here, so even these CREATE TABLEs are
-- logged with full column metadata.

CREATE DATABASE IF NOT EXISTS shop CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS shop.users (
  id         BIGINT PRIMARY KEY,
  email      VARCHAR(255),
  name       VARCHAR(255),
  balance    DECIMAL(12,2),
  created_at DATETIME(6)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS shop.orders (
  id      BIGINT PRIMARY KEY,
  user_id BIGINT,
  status  VARCHAR(32),
  total   DECIMAL(12,2)
) ENGINE=InnoDB;
