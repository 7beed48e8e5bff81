#!/usr/bin/python3
"""Runs a command under the system call filter that a systemd unit gives its service.

    unit-syscall-filter.py UNIT_FILE -- COMMAND [ARG...]

systemd is not PID 1 on the test machines, so the tests cannot start the unit itself; this
builds the same seccomp filter systemd would from the unit's [Service] section and execs
COMMAND under it:

- SystemCallFilter= lines, in order: the first is an allow list, each later one adds to it, or
  with `~` takes its calls out of it (as a drop-in that forbids some calls does); an empty
  value resets it. @groups are expanded as this host's systemd expands them (`systemd-analyze
  syscall-filter`, groups within groups too). Names this kernel's libseccomp does not know are
  skipped, as systemd skips them. A first line with `~` (a deny list) is refused: the shipped
  unit has none.
- A call outside the list fails with SystemCallErrorNumber= (e.g. EPERM); without that key the
  process is killed (SIGSYS), as under systemd.
- SystemCallArchitectures=native: calls of another ABI kill the process (libseccomp's default
  for a filter of the native architecture only).

The seccomp filter is inherited across fork and exec, so COMMAND's children (track scripts)
run under it too, as in the service. Needs Debian's python3-seccomp (hence /usr/bin/python3).
"""

import errno
import os
import subprocess
import sys

import seccomp


def service_values(unit_text, key):
    """The values of `key=` lines in the unit's [Service] section, in order."""
    values, section = [], None
    for raw in unit_text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == "Service" and not line.startswith(("#", ";")) and "=" in line:
            k, v = line.split("=", 1)
            if k.strip() == key:
                values.append(v.strip())
    return values


def groups():
    """{"@group": [member, ...]} as `systemd-analyze syscall-filter` lists them."""
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter", "--no-pager"],
        check=True, capture_output=True, text=True,
    ).stdout
    table, current = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            current = table.setdefault(line.strip(), [])
        elif line.strip() and not line.strip().startswith("#") and current is not None:
            current.append(line.strip())
        elif not line.strip():
            current = None
    return table


def expand(names, table, seen=None):
    """The system calls named by `names` (calls and @groups), groups expanded."""
    seen = set() if seen is None else seen
    calls = set()
    for name in names:
        if name.startswith("@"):
            if name in seen:
                continue
            seen.add(name)
            if name not in table:
                sys.exit(f"unit-syscall-filter: unknown group {name}")
            calls |= expand(table[name], table, seen)
        else:
            calls.add(name)
    return calls


def main(argv):
    if len(argv) < 4 or argv[2] != "--":
        sys.exit("usage: unit-syscall-filter.py UNIT_FILE -- COMMAND [ARG...]")
    with open(argv[1], encoding="utf-8") as f:
        unit = f.read()
    table = groups()
    calls = None
    for value in service_values(unit, "SystemCallFilter"):
        if not value:
            calls = None
        elif value.startswith("~"):
            if calls is None:
                sys.exit("unit-syscall-filter: deny lists (a first ~ line) are not supported")
            calls -= expand(value[1:].split(), table)
        else:
            calls = (calls or set()) | expand(value.split(), table)
    if calls is None:
        sys.exit("unit-syscall-filter: the unit has no SystemCallFilter=")
    archs = service_values(unit, "SystemCallArchitectures")
    if archs and archs[-1] != "native":
        sys.exit(f"unit-syscall-filter: SystemCallArchitectures={archs[-1]} is not supported")
    numbers = service_values(unit, "SystemCallErrorNumber")
    if numbers:
        code = getattr(errno, numbers[-1], None)
        if code is None:
            sys.exit(f"unit-syscall-filter: unknown errno {numbers[-1]}")
        default, said = seccomp.ERRNO(code), numbers[-1]
    else:
        default, said = seccomp.KILL_PROCESS, "SIGSYS"

    f = seccomp.SyscallFilter(defaction=default)
    allowed = 0
    for call in sorted(calls):
        try:
            f.add_rule(seccomp.ALLOW, call)
            allowed += 1
        except (RuntimeError, ValueError):
            pass  # not a call of this architecture or of this libseccomp
    print(
        f"unit-syscall-filter: {allowed} system calls allowed, any other one gets {said}",
        file=sys.stderr,
        flush=True,
    )
    f.load()
    os.execvp(argv[3], argv[3:])


if __name__ == "__main__":
    main(sys.argv)
