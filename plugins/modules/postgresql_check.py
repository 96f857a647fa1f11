#!/usr/bin/python
# Copyright: mlflowops maintainers
# Apache License 2.0 (see galaxy.yml)

DOCUMENTATION = r"""
---
module: postgresql_check
short_description: Prove that a PostgreSQL server is reachable, verifies over TLS and accepts a login
version_added: 0.1.0
description:
  - >-
    Connects from the managed host to a PostgreSQL server the way libpq (and so psycopg2 and MLflow) would,
    and logs in, before anything is changed on the host. Each step is checked in turn, and a failure names
    the step that failed in RV(stage) and in its message.
  - >-
    The steps are C(dns) (the name resolves), C(tcp) (the port answers), C(tls) (the server speaks TLS),
    C(tls_verify) (its certificate verifies against the given CA bundle and is valid for O(host)),
    C(auth) (the login is accepted) and C(database) (the database exists and may be connected to);
    C(protocol) is a server that does not speak the PostgreSQL protocol as expected.
  - >-
    Implements the PostgreSQL frontend/backend protocol 3.0 itself with the Python standard library only, so
    it needs neither psycopg2 nor libpq on the managed host. Logs in with SCRAM-SHA-256 (without channel
    binding, as libpq's default C(channel_binding=prefer) does when it cannot bind), MD5, or a clear-text
    password, whichever the server asks for; a server that asks for no password (C(trust)) is accepted too.
  - >-
    Reads nothing and writes nothing on the host or in the database (the session ends as soon as the server
    is ready for queries), so it supports check mode and never reports a change.
  - The password is never part of the output, nor of any failure message.
options:
  host:
    description:
      - Name or IP address of the PostgreSQL server, as the MLflow host will connect to it. Every address the
        name resolves to is tried in turn, like libpq does, until one accepts the TCP connection.
      - With O(sslmode=verify-full), the certificate must be valid for this name (a DNS name of its subject
        alternative names) or this address (an IP address of them); libpq's rules, including the fallback to
        the subject's Common Name when the certificate has no alternative name of that kind, apply.
    type: str
    required: true
  port:
    description: TCP port of the server.
    type: int
    default: 5432
  user:
    description: Role to log in as.
    type: str
    required: true
  password:
    description: Password of O(user).
    type: str
    required: true
    no_log: true
  database:
    description: Database to connect to.
    type: str
    required: true
  sslmode:
    description:
      - TLS policy, with libpq's meaning of each value.
      - V(disable) never uses TLS.
      - V(allow) logs in without TLS first and, when the server refuses that login, again over TLS
        (certificate not verified).
      - V(prefer) asks for TLS (certificate not verified) and goes on without it when the server does not
        offer TLS, when the TLS handshake fails, or when the server refuses the login over TLS.
      - V(require) needs TLS but does not verify the certificate.
      - V(verify-ca) needs TLS and a certificate chain that verifies against O(ca_content).
      - V(verify-full) also needs the certificate to be valid for O(host).
    type: str
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
    default: verify-full
  ca_content:
    description:
      - The CA certificates that the server's certificate must chain to, as PEM text (one or more
        C(-----BEGIN CERTIFICATE-----) blocks), not a path. The controller reads its CA file and passes the
        text, so the check can run before the CA is installed on the managed host.
      - Only these certificates are trusted, never the system's store.
      - Required (non-empty) with O(sslmode=verify-ca) and O(sslmode=verify-full); ignored otherwise.
    type: str
    default: ''
  timeout:
    description:
      - Seconds to wait for each step (name resolution, TCP connection, each answer of the server).
    type: float
    default: 5
notes:
  - Does not use client certificates, GSSAPI, SSPI or SCRAM-SHA-256-PLUS (channel binding); a server that
    requires one of them fails the check at the C(auth) step.
  - O(password) is handed to the managed host in the module arguments like any other option; Ansible keeps it
    out of its logs and output (C(no_log)).
author:
  - mlflowops maintainers
"""

EXAMPLES = r"""
- name: Prove the database server is reachable, verifies and accepts MLflow's login before changing anything
  mlflowops.tracking.postgresql_check:
    host: db.example.com
    user: mlflow
    password: "{{ vault_mlflow_db_password }}"
    database: mlflow
    sslmode: verify-full
    ca_content: "{{ lookup('ansible.builtin.file', 'files/pki/db-ca.pem') }}"
  register: __db_check

- name: Show what the server runs
  ansible.builtin.debug:
    msg: >-
      PostgreSQL {{ __db_check.server_version }} at {{ __db_check.address }},
      {{ __db_check.tls_version }}, {{ __db_check.authentication }}

- name: A server on the private network without TLS (sslmode=disable)
  mlflowops.tracking.postgresql_check:
    host: 10.0.0.5
    user: mlflow
    password: "{{ vault_mlflow_db_password }}"
    database: mlflow
    sslmode: disable
    timeout: 3
"""

RETURN = r"""
host:
  description: O(host) as given.
  type: str
  returned: always
  sample: db.example.com
port:
  description: O(port) as given.
  type: int
  returned: always
  sample: 5432
address:
  description: The IP address the check connected to (one of those O(host) resolves to).
  type: str
  returned: success, and on failure once a TCP connection was made
  sample: 10.0.0.5
tls:
  description: Whether the session that logged in used TLS.
  type: bool
  returned: success
  sample: true
tls_version:
  description: TLS protocol version of the session; null without TLS.
  type: str
  returned: success
  sample: TLSv1.3
cipher:
  description: TLS cipher suite of the session; null without TLS.
  type: str
  returned: success
  sample: TLS_AES_256_GCM_SHA384
server_version:
  description: The server's C(server_version) setting as it reports it.
  type: str
  returned: success
  sample: 17.2 (Debian 17.2-1.pgdg120+1)
server_version_num:
  description: The major version, the first number of RV(server_version) (9 for 9.6); null when it has none.
  type: int
  returned: success
  sample: 17
authentication:
  description:
    - How the login was proven. V(scram-sha-256), V(md5), V(password) (clear text), or V(trust) when the
      server asked for no password (trust, or ident).
  type: str
  returned: success
  sample: scram-sha-256
stage:
  description: The step that failed, one of dns, tcp, tls, tls_verify, auth, database, protocol.
  type: str
  returned: failure
  sample: auth
sqlstate:
  description: SQLSTATE of the server's error, when the server reported one.
  type: str
  returned: failure, when the server sent an error
  sample: 28P01
"""

import base64
import hashlib
import hmac
import ipaddress
import re
import secrets
import socket
import ssl
import stringprep
import struct
import threading
import unicodedata

from ansible.module_utils.basic import AnsibleModule

SSL_REQUEST = struct.pack("!ii", 8, 80877103)
PROTOCOL_3_0 = 196608
APPLICATION_NAME = "mlflowops-check"
# a server's messages during start-up are small; anything bigger is not a PostgreSQL server
MAX_MESSAGE = 1 << 20
VERIFYING = ("verify-ca", "verify-full")
TLS_REQUIRED = ("require", "verify-ca", "verify-full")
OTHER_METHODS = {2: "Kerberos V5", 6: "SCM credentials", 7: "GSSAPI", 9: "SSPI"}


class CheckFailed(Exception):
    """A step failed: `stage` is the step, `detail` the text after "PostgreSQL at host:port: "."""

    def __init__(self, stage, detail, sqlstate=None, retry=False):
        super().__init__(detail)
        self.stage = stage
        self.detail = detail
        self.sqlstate = sqlstate
        # libpq retries such a failure with the other TLS choice under sslmode allow/prefer
        self.retry = retry
        self.address = None
        self.tls_attempt = None


def ssl_reason(exc):
    """OpenSSL's reason without Python's source position: "certificate verify failed (_ssl.c:1000)"."""
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", str(exc))


def seconds(value):
    return f"{value:g}"


def where(host, port):
    return f"PostgreSQL at [{host}]:{port}" if ":" in host else f"PostgreSQL at {host}:{port}"


# --- names and addresses -------------------------------------------------------------------------------------

def resolve(host, port, timeout):
    """getaddrinfo in a thread: the resolver has no timeout of its own."""
    found = {}

    def work():
        try:
            found["addresses"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            found["error"] = exc.strerror or str(exc)
        except (UnicodeError, OSError, ValueError) as exc:
            found["error"] = str(exc)

    thread = threading.Thread(target=work, name="resolve", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise CheckFailed("dns", f"the name does not resolve (DNS: no answer within {seconds(timeout)} s)")
    if "error" in found:
        raise CheckFailed("dns", f"the name does not resolve (DNS: {found['error']})")
    addresses, seen = [], set()
    for family, socktype, proto, _, sockaddr in found["addresses"]:
        if sockaddr[0] not in seen:
            seen.add(sockaddr[0])
            addresses.append((family, socktype, proto, sockaddr))
    if not addresses:
        raise CheckFailed("dns", "the name does not resolve (DNS: no address)")
    return addresses


def connect(host, addresses, timeout):
    """The first address that accepts the TCP connection, like libpq; else every address's reason."""
    reasons = {}
    for family, socktype, proto, sockaddr in addresses:
        sock = socket.socket(family, socktype, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
            return sock, sockaddr[0]
        except ConnectionRefusedError:
            reason = "TCP connection refused"
        except TimeoutError:
            reason = (f"no answer within {seconds(timeout)} s "
                      "(a firewall dropping packets, or a wrong address/port)")
        except OSError as exc:
            reason = f"TCP connection failed: {exc.strerror or exc}"
        sock.close()
        reasons.setdefault(reason, []).append(sockaddr[0])
    if len(addresses) == 1 and addresses[0][3][0] == host:
        raise CheckFailed("tcp", next(iter(reasons)))
    raise CheckFailed("tcp", "; ".join(f"{reason} ({', '.join(found)})" for reason, found in reasons.items()))


# --- TLS -----------------------------------------------------------------------------------------------------

def tls_context(sslmode, ca_content):
    """The client context for sslmode: only ca_content is trusted, never the system store."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # the host name is checked afterwards with libpq's rules (name_matches)
    context.check_hostname = False
    if sslmode in VERIFYING:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=ca_content)
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def is_ip_address(host):
    """libpq's test: inet_aton() or inet_pton(AF_INET6)."""
    try:
        socket.inet_aton(host)
        return True
    except OSError:
        pass
    try:
        socket.inet_pton(socket.AF_INET6, host)
        return True
    except (OSError, ValueError):
        return False


def name_matches_pattern(pattern, host):
    """libpq's pq_verify_peer_name_matches_certificate_name: exact (any case), or '*.' for one label."""
    if "\0" in pattern:
        return False
    if pattern.lower() == host.lower():
        return True
    if len(pattern) < 3 or not pattern.startswith("*.") or len(pattern) > len(host):
        return False
    if pattern[1:].lower() != host[len(host) - len(pattern) + 1:].lower():
        return False
    return "." not in host[:len(host) - len(pattern) + 1]


def ip_matches(value, host):
    try:
        packed = ipaddress.ip_address(value.strip()).packed
    except ValueError:
        return False
    try:
        if len(packed) == 4:
            return socket.inet_aton(host) == packed
        return socket.inet_pton(socket.AF_INET6, host) == packed
    except (OSError, ValueError):
        return False


def name_matches(host, cert):
    """libpq's verify-full rule on a getpeercert() dict: every SAN is compared; the first Common Name
    only when there is no SAN of the host's kind (DNS for a name, IP address for an address)."""
    kind = "IP Address" if is_ip_address(host) else "DNS"
    sans = cert.get("subjectAltName", ())
    for san_kind, value in sans:
        if san_kind == "DNS" and name_matches_pattern(value, host):
            return True
        if san_kind == "IP Address" and ip_matches(value, host):
            return True
    if any(san_kind == kind for san_kind, _ in sans):
        return False
    common_names = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    return bool(common_names) and name_matches_pattern(common_names[0], host)


def certificate_names(cert):
    names = [f"{'IP' if kind == 'IP Address' else kind}:{value.strip()}"
             for kind, value in cert.get("subjectAltName", ())]
    names += [f"CN:{value}" for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    return ", ".join(names) or "none"


# --- SCRAM-SHA-256 -------------------------------------------------------------------------------------------

PROHIBITED = (
    stringprep.in_table_c12, stringprep.in_table_c21_c22, stringprep.in_table_c3, stringprep.in_table_c4,
    stringprep.in_table_c5, stringprep.in_table_c6, stringprep.in_table_c7, stringprep.in_table_c8,
    stringprep.in_table_c9, stringprep.in_table_a1,
)


def saslprep(password):
    """The bytes PostgreSQL derives the SCRAM secret from (its pg_saslprep): ASCII as is; otherwise SASLprep
    (RFC 4013), or the raw UTF-8 when SASLprep prohibits the string. Like PostgreSQL, the prohibited and
    bidirectional checks look at the mapped string before normalization."""
    raw = password.encode("utf-8", "surrogateescape")
    if password.isascii():
        return raw
    try:
        mapped = ""
        for ch in password:
            if stringprep.in_table_c12(ch):
                mapped += " "
            elif not stringprep.in_table_b1(ch):
                mapped += ch
        if not mapped:
            return raw
        if any(check(ch) for ch in mapped for check in PROHIBITED):
            return raw
        if any(stringprep.in_table_d1(ch) for ch in mapped):
            if any(stringprep.in_table_d2(ch) for ch in mapped):
                return raw
            if not (stringprep.in_table_d1(mapped[0]) and stringprep.in_table_d1(mapped[-1])):
                return raw
        return unicodedata.normalize("NFKC", mapped).encode("utf-8")
    except (UnicodeError, ValueError):
        return raw


def scram_keys(password, salt, iterations):
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return client_key, server_key


def scram_attributes(message):
    attributes = {}
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if not sep or len(key) != 1:
            raise CheckFailed("protocol", f"malformed SCRAM message from the server: {message[:80]!r}")
        attributes.setdefault(key, value)
    return attributes


# --- the wire ------------------------------------------------------------------------------------------------

def error_fields(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


def server_error(fields, user, database, authenticated):
    """CheckFailed for an ErrorResponse: the step it belongs to and a message that says what to fix."""
    code = fields.get("C", "")
    message = fields.get("M", "(no message)")
    if code == "28P01":
        return CheckFailed("auth", f"password authentication failed for user {user} "
                                   "(a wrong password, or no such role, or the role has no password)",
                           code, retry=not authenticated)
    if code == "28000" and not authenticated:
        return CheckFailed("auth", "the server refuses this client (no pg_hba.conf entry for this "
                                   f"address/user/database, or TLS required): {message}", code, retry=True)
    if code == "3D000":
        return CheckFailed("database", f"database {database} does not exist", code)
    if code.startswith("08"):
        stage = "protocol"
    elif code.startswith("28") or not authenticated:
        stage = "auth"
    else:
        stage = "database"
    return CheckFailed(stage, f"{message} (SQLSTATE {code or 'unknown'})", code or None,
                       retry=not authenticated and stage == "auth")


class Session:
    """One connection attempt: TCP, optionally TLS, start-up, login, until ReadyForQuery."""

    def __init__(self, sock, params):
        self.sock = sock
        self.params = params
        self.timeout = params["timeout"]
        self.stage, self.phase = "protocol", "after the SSL request (is this a PostgreSQL server?)"
        self.authenticated = False

    # reading and writing, with failures named after the current phase
    def _io_failed(self, exc):
        if isinstance(exc, CheckFailed):
            return exc
        if isinstance(exc, TimeoutError):
            return CheckFailed(self.stage, f"no answer within {seconds(self.timeout)} s {self.phase}")
        if isinstance(exc, EOFError):
            return CheckFailed(self.stage, f"the server closed the connection {self.phase}")
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return CheckFailed(self.stage, f"the connection failed {self.phase}: {reason}")

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise self._io_failed(exc) from None

    def send_message(self, kind, body):
        self.send(kind + struct.pack("!i", len(body) + 4) + body)

    def recv_exact(self, size):
        data = bytearray()
        try:
            while len(data) < size:
                chunk = self.sock.recv(size - len(data))
                if not chunk:
                    raise EOFError
                data += chunk
        except (OSError, EOFError) as exc:
            raise self._io_failed(exc) from None
        return bytes(data)

    def read_message(self):
        header = self.recv_exact(5)
        kind, length = header[:1], struct.unpack("!i", header[1:])[0]
        if length < 4 or length > MAX_MESSAGE:
            raise CheckFailed("protocol", f"the server sent a message of {length} bytes {self.phase} "
                                          "(is this a PostgreSQL server?)")
        return kind, self.recv_exact(length - 4)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # the steps
    def start_tls(self, context, sslmode):
        host = self.params["host"]
        self.send(SSL_REQUEST)
        answer = self.recv_exact(1)
        if answer == b"N":
            if sslmode in TLS_REQUIRED:
                raise CheckFailed("tls", f"the server does not accept TLS (sslmode={sslmode} needs it)")
            return False
        if answer == b"E":
            raise CheckFailed("protocol", "the server answered the SSL request with an error "
                                          "(a PostgreSQL server older than 7.0, or not a PostgreSQL server)")
        if answer != b"S":
            raise CheckFailed("protocol", f"the server answered the SSL request with {repr(answer)[1:]}, "
                                          "not 'S' or 'N' (is this a PostgreSQL server?)")
        # libpq refuses bytes that came in the clear after 'S' (CVE-2021-23222); an SSH server's banner does this
        self.sock.settimeout(0)
        try:
            extra = self.sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            extra = b""
        except OSError as exc:
            raise self._io_failed(exc) from None
        finally:
            self.sock.settimeout(self.timeout)
        if extra:
            raise CheckFailed("protocol", "the server sent unencrypted data after accepting TLS "
                                          "(is this a PostgreSQL server?)")
        try:
            self.sock = context.wrap_socket(self.sock, server_hostname=host)
        except ssl.SSLCertVerificationError as exc:
            reason = exc.verify_message or ssl_reason(exc)
            raise CheckFailed("tls_verify", "its TLS certificate does not verify against the given CA bundle: "
                                            f"certificate verify failed: {reason}") from None
        except ssl.SSLError as exc:
            raise CheckFailed("tls", f"the TLS handshake failed: {ssl_reason(exc)}", retry=True) from None
        except TimeoutError:
            raise CheckFailed("tls", f"no answer within {seconds(self.timeout)} s to the TLS handshake",
                              retry=True) from None
        except OSError as exc:
            raise CheckFailed("tls", f"the connection failed during the TLS handshake: {exc.strerror or exc}",
                              retry=True) from None
        if sslmode == "verify-full":
            cert = self.sock.getpeercert()
            if not name_matches(host, cert):
                raise CheckFailed("tls_verify", f"the certificate is not valid for the name/address {host} "
                                                f"(it names {certificate_names(cert)})")
        return True

    def start_up(self):
        p = self.params
        self.stage, self.phase = "protocol", "during the login"
        body = struct.pack("!i", PROTOCOL_3_0)
        for key, value in (("user", p["user"]), ("database", p["database"]),
                           ("application_name", APPLICATION_NAME)):
            body += key.encode() + b"\0" + value.encode("utf-8") + b"\0"
        body += b"\0"
        self.send(struct.pack("!i", len(body) + 4) + body)

    def next_authentication(self):
        """The next Authentication request (code, data), skipping notices; errors become CheckFailed."""
        while True:
            kind, body = self.read_message()
            if kind == b"R" and len(body) >= 4:
                return struct.unpack("!i", body[:4])[0], body[4:]
            if kind == b"E":
                raise server_error(error_fields(body), self.params["user"], self.params["database"], False)
            if kind in (b"N", b"v"):
                continue
            raise CheckFailed("protocol", f"unexpected message {kind!r} during the login")

    def authenticate(self):
        p = self.params
        method = "trust"
        code, data = self.next_authentication()
        if code == 3:
            self.send_message(b"p", p["password"].encode("utf-8") + b"\0")
            method = "password"
            code, data = self.next_authentication()
        elif code == 5:
            inner = hashlib.md5((p["password"] + p["user"]).encode("utf-8"), usedforsecurity=False).hexdigest()
            outer = hashlib.md5(inner.encode("ascii") + data[:4], usedforsecurity=False).hexdigest()
            self.send_message(b"p", b"md5" + outer.encode("ascii") + b"\0")
            method = "md5"
            code, data = self.next_authentication()
        elif code == 10:
            self.scram(data)
            method = "scram-sha-256"
            code, data = self.next_authentication()
        elif code in OTHER_METHODS or code == 8:
            raise CheckFailed("auth", f"the server asks for {OTHER_METHODS.get(code, 'GSSAPI')} authentication, "
                                      "which this check does not support")
        if code != 0:
            raise CheckFailed("protocol", f"unexpected authentication request {code} during the login")
        self.authenticated = True
        return method

    def scram(self, data):
        mechanisms = [m.decode("utf-8", "replace") for m in data.split(b"\0") if m]
        if "SCRAM-SHA-256" not in mechanisms:
            raise CheckFailed("auth", f"the server offers only the SASL mechanisms {', '.join(mechanisms)}; "
                                      "this check supports SCRAM-SHA-256")
        nonce = base64.b64encode(secrets.token_bytes(18)).decode("ascii")
        client_first_bare = f"n=,r={nonce}"
        client_first = ("n,," + client_first_bare).encode("ascii")
        self.send_message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(client_first)) + client_first)

        code, data = self.next_authentication()
        if code != 11:
            raise CheckFailed("protocol", f"expected the SCRAM first message, got authentication request {code}")
        server_first = data.decode("utf-8", "replace")
        attributes = scram_attributes(server_first)
        server_nonce = attributes.get("r", "")
        try:
            salt = base64.b64decode(attributes.get("s", ""), validate=True)
            iterations = int(attributes.get("i", ""))
        except ValueError:
            salt, iterations = b"", 0
        if not server_nonce.startswith(nonce) or len(server_nonce) <= len(nonce) or not salt or iterations < 1:
            raise CheckFailed("protocol", "the server's SCRAM first message is invalid (nonce, salt or iterations)")

        client_key, server_key = scram_keys(self.params["password"], salt, iterations)
        stored_key = hashlib.sha256(client_key).digest()
        client_final_bare = f"c=biws,r={server_nonce}"
        auth_message = f"{client_first_bare},{server_first},{client_final_bare}".encode("utf-8")
        signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        client_final = f"{client_final_bare},p={base64.b64encode(proof).decode('ascii')}"
        self.send_message(b"p", client_final.encode("ascii"))

        code, data = self.next_authentication()
        if code != 12:
            raise CheckFailed("protocol", f"expected the SCRAM final message, got authentication request {code}")
        final = scram_attributes(data.decode("utf-8", "replace"))
        if "e" in final:
            raise CheckFailed("auth", f"the server rejects the SCRAM exchange: {final['e']}")
        expected = hmac.new(server_key, auth_message, hashlib.sha256).digest()
        try:
            received = base64.b64decode(final.get("v", ""), validate=True)
        except ValueError:
            received = b""
        if not hmac.compare_digest(received, expected):
            raise CheckFailed("auth", "the server's SCRAM signature does not verify: it does not know the "
                                      "password (something in between pretends to be the server?)")

    def until_ready(self):
        """ParameterStatus, BackendKeyData, notices, until ReadyForQuery; returns server_version."""
        self.phase = "after the login"
        version = None
        while True:
            kind, body = self.read_message()
            if kind == b"Z":
                return version
            if kind == b"S":
                name, _, rest = body.partition(b"\0")
                if name == b"server_version":
                    version = rest.split(b"\0", 1)[0].decode("utf-8", "replace")
            elif kind == b"E":
                raise server_error(error_fields(body), self.params["user"], self.params["database"], True)
            elif kind not in (b"K", b"N", b"v"):
                raise CheckFailed("protocol", f"unexpected message {kind!r} after the login")

    def terminate(self):
        try:
            self.sock.sendall(b"X" + struct.pack("!i", 4))
        except OSError:
            pass


def attempt(params, addresses, use_tls, context):
    sock, address = connect(params["host"], addresses, params["timeout"])
    session = Session(sock, params)
    try:
        tls = session.start_tls(context, params["sslmode"]) if use_tls else False
        session.start_up()
        method = session.authenticate()
        version = session.until_ready()
        session.terminate()
        cipher = session.sock.cipher() if tls else None
        return {
            "address": address,
            "tls": tls,
            "tls_version": session.sock.version() if tls else None,
            "cipher": cipher[0] if cipher else None,
            "server_version": version,
            "authentication": method,
        }
    except CheckFailed as exc:
        exc.address = address
        raise
    finally:
        session.close()


def weight(failure):
    """Which of two failed attempts says more: a refused login over a handshake or pg_hba refusal."""
    if failure.stage == "tls":
        return 0
    if failure.sqlstate == "28000":
        return 1
    return 2


def check(params, context):
    addresses = resolve(params["host"], params["port"], params["timeout"])
    sslmode = params["sslmode"]
    # libpq: allow tries without TLS first, prefer with TLS first, each retried once the other way
    plan = {"disable": [False], "allow": [False, True], "prefer": [True, False]}.get(sslmode, [True])
    failures = []
    for use_tls in plan:
        try:
            return check_result(attempt(params, addresses, use_tls, context))
        except CheckFailed as exc:
            exc.tls_attempt = use_tls
            failures.append(exc)
            if not exc.retry:
                break
    if len(failures) == 1:
        raise failures[0]
    first, second = failures
    primary, other = (first, second) if weight(first) >= weight(second) else (second, first)
    primary.detail += f"; {'with' if other.tls_attempt else 'without'} TLS: {other.detail}"
    raise primary


def check_result(result):
    version = result["server_version"] or ""
    digits = ""
    for ch in version:
        if not ch.isdigit():
            break
        digits += ch
    result["server_version_num"] = int(digits) if digits else None
    return result


def main():
    module = AnsibleModule(
        argument_spec={
            "host": {"type": "str", "required": True},
            "port": {"type": "int", "default": 5432},
            "user": {"type": "str", "required": True},
            "password": {"type": "str", "required": True, "no_log": True},
            "database": {"type": "str", "required": True},
            "sslmode": {"type": "str", "default": "verify-full",
                        "choices": ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]},
            "ca_content": {"type": "str", "default": ""},
            "timeout": {"type": "float", "default": 5},
        },
        supports_check_mode=True,
    )
    p = module.params
    host, port = p["host"], p["port"]
    prefix = where(host, port)
    if not 0 < port < 65536:
        module.fail_json(msg=f"{prefix}: port must be between 1 and 65535", stage="tcp", host=host, port=port)
    if not p["timeout"] > 0:
        module.fail_json(msg=f"{prefix}: timeout must be more than 0 seconds", stage="tcp", host=host, port=port)
    if p["sslmode"] in VERIFYING and not (p["ca_content"] or "").strip():
        module.fail_json(msg=f"{prefix}: sslmode={p['sslmode']} verifies the server's certificate and needs "
                             "ca_content, the PEM text of the CA bundle; it is empty",
                         stage="tls_verify", host=host, port=port)
    # fail_json is called outside the except blocks: no traceback of an expected failure in the result
    failure = None
    try:
        context = tls_context(p["sslmode"], p["ca_content"])
    except (ssl.SSLError, ValueError) as exc:
        failure = CheckFailed("tls_verify", f"ca_content is not a usable PEM CA bundle: {ssl_reason(exc)}")
    if failure is None:
        try:
            result = check(p, context)
        except CheckFailed as exc:
            failure = exc
    if failure is not None:
        details = {"stage": failure.stage, "host": host, "port": port}
        if failure.address:
            details["address"] = failure.address
        if failure.sqlstate:
            details["sqlstate"] = failure.sqlstate
        module.fail_json(msg=f"{prefix}: {failure.detail}", **details)
    module.exit_json(changed=False, host=host, port=port, **result)


if __name__ == "__main__":
    main()
