"""The host itself, beyond sshd and the firewall: what Lynis (`lynis audit system`) suggests for
a Debian VPS and is safe where Docker runs the stack.

- `kernel.core-dumps`: no core dumps (limits, login shells, systemd-coredump): a crashing process
  does not leave its memory, secrets included, on disk;
- `kernel.modules`: network protocols (DCCP, SCTP, RDS, TIPC) and storage drivers (USB storage,
  FireWire) a VPS does not use are never loaded; Docker needs none of them;
- `host.banners`: a legal notice before login (/etc/issue, /etc/issue.net);
- `host.login-defs`: password hashing rounds and a minimum password age (login.defs);
- `host.shell-timeout`: idle interactive shells end after 15 minutes (TMOUT);
- `packages.hardening-tools`: libpam-tmpdir (a private /tmp per login), needrestart (told to list,
  never to restart: restarting dockerd would stop the stack), debsums, apt-show-versions,
  libpam-pwquality;
- `accounting.process`: process accounting (acct);
- `accounting.auditd`: the kernel's audit daemon with rules on what an intruder changes (sshd's and
  Docker's configuration, accounts, sudoers); not applicable in a container (the kernel's audit
  belongs to the host);
- `integrity.aide`: AIDE, with Docker's and the logs' ever-changing directories left out, and its
  database initialised;
- `malware.scanner`: chkrootkit with its daily run on (reporting only what changed since the last);
- `logging.syslog`: a log daemon runs (journald on a systemd host; else rsyslog is installed and
  started), so that sshd's and the kernel's messages are kept.

Declined suggestions (password aging, a stricter login umask, separate partitions, ...) are listed
with the reasons in docs/hardening.md.
"""

from __future__ import annotations

from collections.abc import Sequence

from finaiflow_ops.hardening.base import Command, Context, Severity, apt_install
from finaiflow_ops.hardening.hostconfig import HEADER, Condition, HostConfigRule, ManagedFile, Settings

__all__ = [
    "AIDE_DB",
    "AuditdRule",
    "BannersRule",
    "CoreDumpsRule",
    "FileIntegrityRule",
    "HardeningPackagesRule",
    "KernelModulesRule",
    "LoginDefsRule",
    "MalwareScannerRule",
    "ProcessAccountingRule",
    "ShellTimeoutRule",
    "SyslogRule",
]

_IN_CONTAINER = ("sh", "-c", "test -f /.dockerenv || test -f /run/.containerenv")


class CoreDumpsRule(HostConfigRule):
    id = "kernel.core-dumps"
    title = "no core dumps (limits, login shells, systemd-coredump; fs.suid_dumpable in sysctl.kernel)"
    severity = Severity.MEDIUM

    def managed(self, ctx: Context) -> Sequence[ManagedFile]:
        files = [ManagedFile("/etc/security/limits.d/60-finaiflow-core.conf",
                             f"{HEADER}: no core dumps.\n* hard core 0\n* soft core 0\n"),
                 ManagedFile("/etc/profile.d/finaiflow-core.sh", f"{HEADER}: no core dumps.\nulimit -c 0\n")]
        if ctx.systemd:
            files.append(ManagedFile("/etc/systemd/coredump.conf.d/60-finaiflow.conf", f"{HEADER}: no core "
                                     "dumps.\n[Coredump]\nStorage=none\nProcessSizeMax=0\n"))
        return files


UNUSED_MODULES = ("dccp", "sctp", "rds", "tipc", "usb-storage", "firewire-core", "firewire-ohci",
                  "firewire-sbp2")


class KernelModulesRule(HostConfigRule):
    id = "kernel.modules"
    title = "unused network protocols and storage drivers never loaded (DCCP, SCTP, RDS, TIPC, USB, FireWire)"
    severity = Severity.LOW

    def managed(self, ctx: Context) -> Sequence[ManagedFile]:
        lines = "".join(f"install {m} /bin/true\n" for m in UNUSED_MODULES)
        lines += "".join(f"blacklist {m}\n" for m in UNUSED_MODULES)
        return [ManagedFile("/etc/modprobe.d/60-finaiflow-unused.conf",
                            f"{HEADER}: protocols and drivers a VPS running Docker does not use.\n{lines}")]


BANNER = ("Authorized access only. This system is private property; its use is subject to the owner's\n"
          "security policy. All connections and activity are monitored and logged, and may be recorded\n"
          "and disclosed to law enforcement as evidence. Unauthorized access is prohibited.\n")


class BannersRule(HostConfigRule):
    id = "host.banners"
    title = "a legal notice before login (/etc/issue, /etc/issue.net)"
    severity = Severity.LOW

    def managed(self, ctx: Context) -> Sequence[ManagedFile]:
        return [ManagedFile("/etc/issue", BANNER), ManagedFile("/etc/issue.net", BANNER)]


class LoginDefsRule(HostConfigRule):
    id = "host.login-defs"
    title = "password hashing rounds and a minimum password age set in login.defs"
    severity = Severity.LOW

    def settings(self, ctx: Context) -> Sequence[Settings]:
        # A minimum age only keeps a new password from being changed back at once; nothing expires
        # (a maximum age would: see docs/hardening.md).
        wanted = {"SHA_CRYPT_MIN_ROUNDS": "10000", "SHA_CRYPT_MAX_ROUNDS": "100000", "PASS_MIN_DAYS": "1"}
        return [Settings("/etc/login.defs", wanted)]


class ShellTimeoutRule(HostConfigRule):
    id = "host.shell-timeout"
    title = "idle interactive shells end after 15 minutes (TMOUT)"
    severity = Severity.LOW

    def managed(self, ctx: Context) -> Sequence[ManagedFile]:
        return [ManagedFile("/etc/profile.d/finaiflow-timeout.sh", f"{HEADER}: idle interactive shells "
                            "end.\nTMOUT=900\nreadonly TMOUT\nexport TMOUT\n")]


NEEDRESTART_CONF = "/etc/needrestart/conf.d/60-finaiflow.conf"


class HardeningPackagesRule(HostConfigRule):
    id = "packages.hardening-tools"
    title = "libpam-tmpdir, needrestart (list only), debsums, apt-show-versions, libpam-pwquality installed"
    severity = Severity.LOW
    packages = ("libpam-tmpdir", "needrestart", "debsums", "apt-show-versions", "libpam-pwquality")

    def managed(self, ctx: Context) -> Sequence[ManagedFile]:
        # Restarting services on its own would restart dockerd (the stack) and sshd mid-session.
        return [ManagedFile(NEEDRESTART_CONF, f"{HEADER}: list what needs a restart, restart nothing.\n"
                                              "$nrconf{restart} = 'l';\n")]


PACCT = "/var/log/account/pacct"


class ProcessAccountingRule(HostConfigRule):
    id = "accounting.process"
    title = "process accounting (acct) on"
    severity = Severity.LOW
    packages = ("acct",)

    def conditions(self, ctx: Context) -> Sequence[Condition]:
        # The package's service starts accounting; where it cannot (a container lacks the
        # capability), the file is there for the host's accounting to fill.
        script = f"test -f {PACCT} || install -D -m 0640 /dev/null {PACCT}; accton {PACCT} 2>/dev/null; true"
        return [Condition(("test", "-f", PACCT), f"{PACCT} is missing",
                          Command(f"create {PACCT} and start accounting", ("sh", "-c", script)))]


AUDIT_RULES = "/etc/audit/rules.d/60-finaiflow.rules"
AUDIT_RULES_TEXT = f"""{HEADER}: what an intruder changes first.
-w /etc/ssh/sshd_config -p wa -k sshd
-w /etc/ssh/sshd_config.d/ -p wa -k sshd
-w /root/.ssh/ -p wa -k ssh-keys
-w /etc/passwd -p wa -k identity
-w /etc/shadow -p wa -k identity
-w /etc/group -p wa -k identity
-w /etc/sudoers -p wa -k sudoers
-w /etc/sudoers.d/ -p wa -k sudoers
-w /etc/docker/ -p wa -k docker
-w /usr/bin/dockerd -p x -k docker
-w /var/run/docker.sock -p rwa -k docker
-w /etc/crontab -p wa -k cron
-w /etc/cron.d/ -p wa -k cron
"""


class AuditdRule(HostConfigRule):
    id = "accounting.auditd"
    title = "auditd running with rules on sshd, accounts, sudoers, Docker and cron"
    severity = Severity.LOW
    packages = ("auditd",)

    def applies(self, ctx: Context) -> str:
        if ctx.target.run(*_IN_CONTAINER, check=False).ok:
            return "in a container: the kernel's audit belongs to the host, auditd cannot run here"
        return ""

    def managed(self, ctx: Context) -> Sequence[ManagedFile]:
        return [ManagedFile(AUDIT_RULES, AUDIT_RULES_TEXT, 0o640)]

    def conditions(self, ctx: Context) -> Sequence[Condition]:
        start = "systemctl enable --now auditd" if ctx.systemd else "pidof auditd >/dev/null || auditd"
        loaded = "pidof auditd >/dev/null && auditctl -l | grep -q -- '-k docker'"
        return [Condition(("sh", "-c", loaded), "auditd is not running with our rules loaded",
                          Command("start auditd, load the rules (augenrules --load)",
                                  ("sh", "-c", f"{start} && augenrules --load")))]


AIDE_DB = "/var/lib/aide/aide.db"
AIDE_EXCLUDES = "/etc/aide/aide.conf.d/60_finaiflow_docker"


class FileIntegrityRule(HostConfigRule):
    id = "integrity.aide"
    title = "file integrity: AIDE installed, its database initialised (Docker's data left out)"
    severity = Severity.MEDIUM
    packages = ("aide",)

    def managed(self, ctx: Context) -> Sequence[ManagedFile]:
        # Images, containers, volumes (the database's files) and logs change all the time: AIDE
        # would report them every day, and hashing them takes hours on a real host.
        return [ManagedFile(AIDE_EXCLUDES, f"{HEADER}: what changes by design on a Docker host.\n"
                                           "!/var/lib/docker\n!/var/lib/containerd\n!/var/log\n!/run\n")]

    def conditions(self, ctx: Context) -> Sequence[Condition]:
        # aide --init as root, as aideinit does it without its capsh step (which needs
        # CAP_DAC_READ_SEARCH, absent in a container), then the new database put in place.
        script = f"aide --config=/etc/aide/aide.conf --init >/dev/null && cp -f {AIDE_DB}.new {AIDE_DB}"
        return [Condition(("test", "-s", AIDE_DB), f"no AIDE database ({AIDE_DB})",
                          Command("initialise AIDE's database (aide --init)", ("sh", "-c", script),
                                  timeout=1800.0))]


CHKROOTKIT_CONF = "/etc/chkrootkit/chkrootkit.conf"


class MalwareScannerRule(HostConfigRule):
    id = "malware.scanner"
    title = "a malware scanner (chkrootkit) runs daily"
    severity = Severity.LOW
    packages = ("chkrootkit",)

    def conditions(self, ctx: Context) -> Sequence[Condition]:
        # Debian's package runs daily (DIFF_MODE: only changes are reported) unless told not to.
        return [Condition(("grep", "-q", '^RUN_DAILY="true"', CHKROOTKIT_CONF),
                          f"{CHKROOTKIT_CONF}: RUN_DAILY is not true",
                          Command("turn chkrootkit's daily run on",
                                  ("sed", "-i", 's/^RUN_DAILY=.*/RUN_DAILY="true"/', CHKROOTKIT_CONF)))]


class SyslogRule(HostConfigRule):
    id = "logging.syslog"
    title = "a log daemon runs (journald, else rsyslog)"
    severity = Severity.LOW

    def conditions(self, ctx: Context) -> Sequence[Condition]:
        start = "systemctl enable --now rsyslog" if ctx.systemd else "pidof rsyslogd >/dev/null || rsyslogd"
        return [Condition(("sh", "-c", "pidof systemd-journald rsyslogd syslog-ng >/dev/null"),
                          "no log daemon runs (journald, rsyslog or syslog-ng)",
                          (apt_install("rsyslog"), Command("start rsyslog", ("sh", "-c", start))))]
