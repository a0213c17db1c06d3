--
-- PostgreSQL database dump
--

\restrict GOyWRsFMdHWYd8XGLVbFgy83AU3PvbpteGMauG3u7OhhGugafZVflotpXU5Eqhb

-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: d2; Type: DATABASE; Schema: -; Owner: postgres
--

CREATE DATABASE d2 WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = icu LOCALE = 'C' ICU_LOCALE = 'de-DE';


ALTER DATABASE d2 OWNER TO postgres;

\unrestrict GOyWRsFMdHWYd8XGLVbFgy83AU3PvbpteGMauG3u7OhhGugafZVflotpXU5Eqhb
\connect d2
\restrict GOyWRsFMdHWYd8XGLVbFgy83AU3PvbpteGMauG3u7OhhGugafZVflotpXU5Eqhb

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: DATABASE d2; Type: COMMENT; Schema: -; Owner: postgres
--

COMMENT ON DATABASE d2 IS 'multi
line';


--
-- Name: d2; Type: DATABASE PROPERTIES; Schema: -; Owner: postgres
--

ALTER DATABASE d2 SET work_mem TO '8MB';


\unrestrict GOyWRsFMdHWYd8XGLVbFgy83AU3PvbpteGMauG3u7OhhGugafZVflotpXU5Eqhb
\connect d2
\restrict GOyWRsFMdHWYd8XGLVbFgy83AU3PvbpteGMauG3u7OhhGugafZVflotpXU5Eqhb

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: DATABASE d2; Type: ACL; Schema: -; Owner: postgres
--

GRANT CONNECT ON DATABASE d2 TO alice;


--
-- PostgreSQL database dump complete
--

\unrestrict GOyWRsFMdHWYd8XGLVbFgy83AU3PvbpteGMauG3u7OhhGugafZVflotpXU5Eqhb

