"""What pip would install from a lock for CPython VERSION on Linux MACHINE, or for the Python that runs
this, as pip's installation report, without downloading a wheel.

For each pin of the lock, the wheel pip would pick there: among the files of that version on the
index, the one whose tags come first in that Python's and machine's order (what pip's `--python-version`
and `--platform` give it), whose Requires-Python admits it. Its SHA-256 on the index must be among the
lock's. Its metadata is read from the wheel itself with HTTP range requests: the zip's central
directory and its `.dist-info/METADATA` member, kilobytes of wheels that weigh gigabytes (PyTorch's,
NVIDIA's). `pip install --dry-run --no-deps --report` says the same, but downloads every wheel it picks,
hash-checking or not (pip 23.2 to 26.3), as the index serves no metadata files (PEP 658) here.

Writes the report for each TARGET (pip's format 1, with the fields xtask and lock_closure.py read:
each package's metadata and file, not pip's `environment`, which lock_closure.py makes from TARGET) to
the OUT after it. Prints each pin it could not pick a locked wheel of and exits 1. The targets share
what they read (each project's index, each wheel's metadata) and a few kept-alive connections, which go
through the http:// proxy `https_proxy` (or `HTTPS_PROXY`) names, as pip's do, unless `no_proxy` exempts
the host. (xtask gives it pip's own proxy setting, where pip has one, as `https_proxy` and no `no_proxy`.)

Usage: lock_report.py INDEX LOCK GLIBC_MINOR TARGET OUT [TARGET OUT ...]
       (INDEX: PyPI's simple index URL; GLIBC_MINOR: the newest glibc a wheel may need, as 28;
        TARGET: VERSION/MACHINE as 3.13/aarch64, or `this`)
"""

import base64
import concurrent.futures
import email.parser
import functools
import http.client
import io
import json
import platform
import ssl
import sys
import threading
import time
import urllib.parse
import urllib.request
import zipfile

try:
    from packaging import tags
    from packaging.specifiers import SpecifierSet
    from packaging.utils import canonicalize_name, parse_wheel_filename
except ImportError:  # pip brings its own copy, where the system has none
    from pip._vendor.packaging import tags
    from pip._vendor.packaging.specifiers import SpecifierSet
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename

# PEP 600's manylinux_2_N with the older names of three of them (PEP 513, 571 and 599).
OLDER_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
# The least a range request asks for: the zip's end record sits in its last 22 bytes plus a comment,
# and its central directory just before.
MIN_RANGE = 64 * 1024


def lock_pins(text):
    """Each `name==version` of a lock's text with its hashes."""
    pins = []
    for line in text.splitlines():
        line = line.strip().rstrip("\\").strip()
        if line.startswith("--hash=sha256:"):
            pins[-1][1].add(line.removeprefix("--hash=sha256:"))
        elif line and not line.startswith("#"):
            pins.append((line, set()))
    return pins


def supported_tags(target, glibc_minor):
    """The wheel tags `target` installs, each with its rank (0 the best), and its Python version as pip
    compares it with a file's Requires-Python (`3.13` as `--python-version` gives it; this Python's in
    full)."""
    if target == "this":
        return ranked(tags.sys_tags()), platform.python_version()
    version, machine = target.split("/")
    python = tuple(int(part) for part in version.split("."))
    platforms = []
    for minor in range(glibc_minor, 4, -1):
        platforms.append(f"manylinux_2_{minor}_{machine}")
        if minor in OLDER_MANYLINUX:
            platforms.append(f"{OLDER_MANYLINUX[minor]}_{machine}")
    interpreter = "cp%d%d" % python
    found = list(tags.cpython_tags(python, platforms=platforms))
    found += list(tags.compatible_tags(python, interpreter, platforms))
    return ranked(found), version


def ranked(supported):
    """Each of the tags `supported`, best first, by its rank."""
    return {tag: rank for rank, tag in enumerate(supported)}


# Each thread's kept-alive connections, by host: with a new connection for each request, each would look
# the host up and shake hands again, hundreds at once, and this machine's resolver failed under that.
CONNECTIONS = threading.local()
SSL_CONTEXT = ssl.create_default_context()
ATTEMPTS = 4


def proxy_for(netloc):
    """The proxy `https_proxy` names for `netloc` (as a split URL), or None: none named, or `no_proxy`
    exempts the host."""
    proxy = urllib.request.getproxies().get("https")
    if not proxy or urllib.request.proxy_bypass(urllib.parse.urlsplit(f"//{netloc}").hostname):
        return None
    proxy_url = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if proxy_url.scheme != "http":
        raise OSError(f"https_proxy={proxy}: lock_report.py reaches a proxy over http:// only")
    return proxy_url


def connect(netloc, proxy):
    """An HTTPS connection to `netloc`: straight, or through a tunnel (CONNECT) of `proxy`, with the
    credentials it gives."""
    if proxy is None:
        return http.client.HTTPSConnection(netloc, timeout=180, context=SSL_CONTEXT)
    headers = {}
    if proxy.username is not None:
        user, password = (urllib.parse.unquote(part or "") for part in (proxy.username, proxy.password))
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    connection = http.client.HTTPSConnection(proxy.hostname, proxy.port or 80, timeout=180, context=SSL_CONTEXT)
    connection.set_tunnel(netloc, headers=headers)
    return connection


def fetch(url, headers):
    """The body of `url`'s answer (200, or 206 to a range request) with its headers, asked again after
    a failed connection or a server's error."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    proxy = proxy_for(parts.netloc)
    connections = CONNECTIONS.__dict__.setdefault("by_host", {})
    for attempt in range(ATTEMPTS):
        if parts.netloc not in connections:
            connections[parts.netloc] = connect(parts.netloc, proxy)
        try:
            connections[parts.netloc].request("GET", path, headers=headers)
            response = connections[parts.netloc].getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as error:
            failure = error
        else:
            if response.status in (200, 206):
                return body, response.headers
            failure = f"HTTP {response.status} {response.reason}"
            if response.status < 500:
                raise OSError(f"{url}: {failure}")
        connections.pop(parts.netloc).close()
        time.sleep(2**attempt)
    through = "" if proxy is None else f" through the proxy {proxy.hostname}:{proxy.port or 80}"
    raise OSError(f"{url}: {failure} (asked {ATTEMPTS} times{through})")


class RemoteFile(io.RawIOBase):
    """A file on a web server read with range requests, each range kept once read."""

    def __init__(self, url, size):
        self.url, self.size, self.position, self.ranges = url, size, 0, []

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.position

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = base + offset
        return self.position

    def readinto(self, buffer):
        end = min(self.position + len(buffer), self.size)
        if end <= self.position:
            return 0
        data = self.read_range(self.position, end)
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)

    def read_range(self, start, end):
        for first, data in self.ranges:
            if first <= start and end <= first + len(data):
                return data[start - first : end - first]
        first = max(0, min(start, end - MIN_RANGE))
        data, headers = fetch(self.url, {"Range": f"bytes={first}-{end - 1}"})
        asked = f"bytes {first}-{end - 1}/{self.size}"
        if headers.get("Content-Range") != asked or len(data) != end - first:
            raise OSError(f"{self.url}: asked for {asked}, got {headers.get('Content-Range')} ({len(data)} bytes)")
        self.ranges.append((first, data))
        return data[start - first : end - first]


@functools.lru_cache(maxsize=None)
def wheel_metadata(url, size, filename):
    """The name, version and Requires-Dist of the wheel at `url`, read from its zip by range requests."""
    with zipfile.ZipFile(RemoteFile(url, size)) as wheel:
        names = [name for name in wheel.namelist() if name.count("/") == 1 and name.endswith(".dist-info/METADATA")]
        if len(names) != 1:
            raise ValueError(f"{filename} holds {len(names)} .dist-info/METADATA files")
        metadata = email.parser.HeaderParser().parsestr(wheel.read(names[0]).decode("utf-8"))
    return {"name": metadata["Name"], "version": metadata["Version"], "requires_dist": metadata.get_all("Requires-Dist") or []}


@functools.lru_cache(maxsize=None)
def project_files(index, name):
    """The files of project `name` on the index (PEP 691's JSON form)."""
    body, _ = fetch(f"{index}/{canonicalize_name(name)}/", {"Accept": "application/vnd.pypi.simple.v1+json"})
    return json.loads(body)["files"]


def pick(index, pin, hashes, priority, version):
    """The report entry of the wheel pip would pick for `pin` where `priority` ranks the tags, or what
    went wrong, in words."""
    name, pinned_version = pin.split("==")
    candidates = []
    for file in project_files(index, name):
        if not file["filename"].endswith(".whl"):
            continue
        _, file_version, _, file_tags = parse_wheel_filename(file["filename"])
        requires_python = file.get("requires-python")
        if str(file_version) != pinned_version or (requires_python and version not in SpecifierSet(requires_python)):
            continue
        ranks = [priority[tag] for tag in file_tags if tag in priority]
        if ranks:
            candidates.append((min(ranks), file["filename"], file))
    if not candidates:
        return None, f"{pin}: no wheel on the index installs here"
    file = min(candidates, key=lambda candidate: candidate[:2])[2]
    sha256 = file["hashes"]["sha256"]
    if sha256 not in hashes:
        return None, f"{pin}: pip picks {file['filename']}, whose SHA-256 {sha256} is not among the lock's"
    entry = {
        "metadata": wheel_metadata(file["url"], file["size"], file["filename"]),
        "download_info": {"url": file["url"], "archive_info": {"hashes": {"sha256": sha256}}},
    }
    return entry, None


def main():
    index, lock_path, glibc_minor, *targets = sys.argv[1:]
    index = index.rstrip("/")
    with open(lock_path) as lock_file:
        pins = lock_pins(lock_file.read())
    outs = dict(zip(targets[::2], targets[1::2]))
    supported = {target: supported_tags(target, int(glibc_minor)) for target in outs}
    jobs = [(target, pin, hashes) for target in outs for pin, hashes in pins]
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        picked = list(pool.map(lambda job: pick(index, job[1], job[2], *supported[job[0]]), jobs))
    failed = False
    for target, out in outs.items():
        entries = [entry for (job_target, _, _), entry in zip(jobs, picked) if job_target == target]
        version = supported[target][1]
        where = "this Python" if target == "this" else f"CPython {version} on {target.split('/')[1]}"
        for _, problem in entries:
            if problem:
                print(f"{where}: {problem}")
                failed = True
        report = {"version": "1", "install": [entry for entry, _ in entries]}
        with open(out, "w") as out_file:
            json.dump(report, out_file)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
