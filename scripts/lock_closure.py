"""Whether a lock's pins hold everything its roots need on another CPython version and Linux machine.

pip resolves a lock on the Python that runs it, and evaluates the `python_version` and
`platform_machine` markers of what it reads against that Python and machine even when asked for others
(`--python-version` and `--platform` choose the wheels, not the markers). So `cargo xtask lock` and its
tests have lock_report.py give each pin's wheel for the other version and machine, as pip's
installation report, and this script walks the dependencies from the roots with the markers evaluated
for them: every requirement that holds there must name a pinned package at a version it allows; with
`--exact`, every pin must be one the roots need there (the lock is their closure, nothing more). Prints
what is missing and exits 1, or prints one line.

Usage: lock_closure.py REPORT ROOTS TARGET [--exact]
       (ROOTS a requirements file; TARGET as lock_report.py's: `3.13/aarch64`, or `this` for the
        Python that runs this)
"""

import json
import sys

try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # pip brings its own copy, where the system has none
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name


def missing(report, roots, target, exact):
    """What the roots need on `target` that the pins in `report` do not give, and with `exact` the pins
    they do not need there, in words."""
    pinned = {}
    for package in report["install"]:
        metadata = package["metadata"]
        pinned[canonicalize_name(metadata["name"])] = (metadata["version"], metadata.get("requires_dist") or [])
    environment = default_environment()
    if target != "this":
        version, machine = target.split("/")
        environment.update(
            python_version=version,
            python_full_version=version + ".0",
            implementation_version=version + ".0",
            sys_platform="linux",
            platform_system="Linux",
            platform_machine=machine,
        )
    problems = []
    seen = set()
    # (who needs it, the requirement, the extras it was asked for with): the roots first.
    todo = [("the roots", Requirement(line), ()) for line in roots]
    while todo:
        needed_by, requirement, asked_extras = todo.pop()
        extras = ("",) + asked_extras
        if requirement.marker and not any(requirement.marker.evaluate(dict(environment, extra=e)) for e in extras):
            continue
        name = canonicalize_name(requirement.name)
        wanted = f"{name}{requirement.specifier} (for {needed_by})"
        if name not in pinned:
            problems.append(f"{wanted}: the lock does not pin {name}")
            continue
        version_pinned, requires_dist = pinned[name]
        if not requirement.specifier.contains(version_pinned, prereleases=True):
            problems.append(f"{wanted}: the lock pins {name}=={version_pinned}")
        for extra in ("",) + tuple(sorted(requirement.extras)):
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            asked = (extra,) if extra else ()
            todo.extend((f"{name}=={version_pinned}", Requirement(line), asked) for line in requires_dist)
    if exact:
        needed = {name for name, _ in seen}
        problems += [f"{name}=={pinned[name][0]}: the roots need it nowhere" for name in pinned if name not in needed]
    return problems


def main():
    arguments = sys.argv[1:]
    exact = "--exact" in arguments
    report_path, roots_path, target = [argument for argument in arguments if argument != "--exact"]
    with open(report_path) as report_file:
        report = json.load(report_file)
    with open(roots_path) as roots_file:
        roots = [line.strip() for line in roots_file if line.strip() and not line.lstrip().startswith("#")]
    # One line each, in the order found (a package several pins need is named once a pin).
    problems = list(dict.fromkeys(missing(report, roots, target, exact)))
    where = "this Python" if target == "this" else "CPython {} on {}".format(*target.split("/"))
    for problem in problems:
        print(f"{where}: {problem}")
    if problems:
        sys.exit(1)
    nothing_more = ", and nothing more" if exact else ""
    print(f"{where}: the {len(report['install'])} pins hold everything their roots need{nothing_more}")


if __name__ == "__main__":
    main()
