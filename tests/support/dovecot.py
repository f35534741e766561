"""A Dovecot IMAP server of the test suite's own: its own process, config, users and maildirs in a temporary
folder, on free loopback ports; no system path, and not the machine's dovecot service.

Users come from passwd-files, one per user (plain passwords: test users). It listens on two
ports: imap (STARTTLS offered, plain-text login allowed, for `?starttls=never`)
and imaps (implicit TLS), with a certificate of the tests' CA (tests/support/tls.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

from imapclient import IMAPClient

from .net import free_port
from .tls import Authority, make_ca

DOVECOT = "/usr/sbin/dovecot"

_CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
instance_name = coldmail-test-{port}
protocols = imap
listen = 127.0.0.1
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = 0
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users/%u
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
mail_location = maildir:{root}/mail/%u
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""


def _user_ids(name: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


class Dovecot:
    def __init__(self, users: dict[str, str]) -> None:
        self.users = dict(users)
        # mkdtemp is 0700; the login processes run as dovenull and must reach base_dir
        self.root = Path(tempfile.mkdtemp(prefix="coldmail-dovecot-"))
        self.root.chmod(0o755)
        self.port = free_port()
        self.tls_port = free_port()
        self.ca: Authority = make_ca(self.root / "ca", names=["localhost", "127.0.0.1"])
        self.proc: subprocess.Popen | None = None

    @property
    def config(self) -> Path:
        return self.root / "dovecot.conf"

    def start(self) -> Dovecot:
        # Dovecot never runs mail processes as root: as root, the mail belongs to its own `dovecot` user
        uid, gid = (os.getuid(), os.getgid()) if os.getuid() else _user_ids("dovecot")
        for folder in ("run", "state", "home", "mail", "users"):
            (self.root / folder).mkdir(mode=0o755)
        for folder in ("home", "mail"):
            os.chown(self.root / folder, uid, gid)
        (self.root / "ca").chmod(0o755)
        self._write_users()
        self.config.write_text(_CONFIG.format(root=self.root, port=self.port, tls_port=self.tls_port,
                                              cert=self.ca.cert_file, key=self.ca.key_file,
                                              uid=uid, gid=gid))
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dovecot exited ({self.proc.returncode}): {self._log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(100).startswith(b"* OK"):
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"dovecot did not answer on port {self.port} within 15s: {self._log()}")

    def _write_users(self) -> None:
        for user, password in self.users.items():
            self._write_user(user, password)

    def _write_user(self, user: str, password: str) -> None:
        # a passwd-file per user (the path names %u): a new user is a new file, with nothing to reload
        (self.root / "users" / user).write_text(f"{user}:{{PLAIN}}{password}::::::\n")

    def add_user(self, user: str, password: str) -> None:
        """A user more, with an empty mailbox."""
        self.users[user] = password
        self._write_user(user, password)

    def _log(self) -> str:
        log = self.root / "dovecot.log"
        err = self.proc.stderr.read().decode(errors="replace") if self.proc and self.proc.poll() is not None else ""
        return (log.read_text()[-2000:] if log.exists() else "") + err[-2000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- what a test does to a mailbox, as a mail client would

    def client_context(self) -> ssl.SSLContext:
        """A TLS context that trusts the tests' CA (and checks the name)."""
        return ssl.create_default_context(cafile=str(self.ca.ca_file))

    def client(self, user: str) -> IMAPClient:
        client = IMAPClient("127.0.0.1", port=self.tls_port, ssl=True, ssl_context=self.client_context(),
                            timeout=10)
        client.login(user, self.users[user])
        return client

    def append(self, user: str, message: bytes, *, folder: str = "INBOX", flags: tuple = ()) -> int:
        """Put `message` in the user's folder; its UID."""
        with self.client(user) as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            response = client.append(folder, message, flags=flags)
        # APPENDUID (RFC 4315): b'[APPENDUID <uidvalidity> <uid>] Append completed.'
        return int(response.split(b"]")[0].split()[-1])

    def flags(self, user: str, folder: str = "INBOX") -> dict[int, tuple]:
        """Each message's flags, by UID (read with EXAMINE: reading them changes nothing)."""
        with self.client(user) as client:
            client.select_folder(folder, readonly=True)
            return {uid: data[b"FLAGS"] for uid, data in client.fetch(client.search("ALL"), ["FLAGS"]).items()}

    def uidvalidity(self, user: str) -> int:
        with self.client(user) as client:
            return client.folder_status("INBOX", ["UIDVALIDITY"])[b"UIDVALIDITY"]

    def rebuild_inbox(self, user: str, *, keep: int | None = None) -> None:
        """Give the user's INBOX a new UIDVALIDITY, its messages new UIDs (as a mailbox restored from a backup
        has), keeping its first `keep` messages only (None: all): Dovecot renumbers a maildir whose UID list
        and indexes are gone."""
        maildir = self.root / "mail" / user
        if keep is not None:
            # By UID, through IMAP: the maildir's file names do not sort in arrival order (their microseconds
            # are not zero-padded), so deleting "all but the first files" once kept the wrong message
            with self.client(user) as client:
                client.select_folder("INBOX")
                extra = sorted(client.search("ALL"))[keep:]
                if extra:
                    client.delete_messages(extra)
                    client.expunge()
        for path in maildir.glob("dovecot*"):
            if path.name.startswith(("dovecot-uidlist", "dovecot.index")):
                path.unlink()
