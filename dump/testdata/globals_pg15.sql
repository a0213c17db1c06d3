--
-- PostgreSQL database cluster dump
--

\restrict 3yEli1P5FgXqwCzE9gx3eHzHChBOb4FkghydyItFgnLeMuU2n6WdOaAaMH43uit

SET default_transaction_read_only = off;

SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;

--
-- Roles
--

CREATE ROLE "Weird ""name";
ALTER ROLE "Weird ""name" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE alice;
ALTER ROLE alice WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS PASSWORD 'SCRAM-SHA-256$4096:6E7Y4UCLwGsoSlJovSJhCg==$8bkiKGev2EOcmS0IbKEPehls6ZJ2XGw8gQIUvmBq2zo=:HQt8j93nhRQpcr81RwV3tzpgh8nXpEjC1cfyWxfKSm0=';
COMMENT ON ROLE alice IS 'it''s
alice';
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
CREATE ROLE readers;
ALTER ROLE readers WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;

--
-- User Configurations
--


--
-- Role memberships
--

GRANT readers TO "Weird ""name" WITH ADMIN OPTION GRANTED BY postgres;
GRANT readers TO alice GRANTED BY postgres;






\unrestrict 3yEli1P5FgXqwCzE9gx3eHzHChBOb4FkghydyItFgnLeMuU2n6WdOaAaMH43uit

--
-- PostgreSQL database cluster dump complete
--

