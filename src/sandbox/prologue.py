# The Docker sandbox's entry point (PID 1 of every job container, run as the sandbox user with
# `python3 -I -S -c`). Standard library only, and no module beyond what the interpreter loads
# anyway, so it costs little more than the interpreter's start.
#
# argv: script, collect_dir ('' for none), max_files, max_bytes, n_skip, skip names..., collect...
# stdin: 32 hex digits of nonce, 16 hex digits of length, then the inputs as a tar (dirs and
# regular files, GNU long names) that it unpacks under /work.
# It runs `sh -c script` in /work/scratch with stdin from /dev/null and the container's own
# stdout and stderr, waits for it, kills and reaps every process left, then writes to stdout a
# marker made of the nonce and a tar of the results: `f/<rel>` for each collected file,
# `t` and `t/<rel>` for the collected directory, `m/overflow`, `m/unreadable/<rel>`,
# `m/setup-error`. It exits with the job's status (128 + the signal when killed by one).
# SIGUSR1 (the host's timeout) kills everything the job runs at once; the results are then sent
# as usual: /work is a tmpfs, gone with the container, so they cannot be read afterwards.
import os, sys, stat as T, _signal as S

S.signal(S.SIGINT, S.SIG_DFL)


def stop(*_):
    try:
        os.kill(-1, 9)
    except OSError:
        pass


S.signal(S.SIGUSR1, stop)
a = [os.fsencode(x) for x in sys.argv[1:]]


def rd(n):
    b = bytearray(n)
    m = memoryview(b)
    g = 0
    while g < n:
        k = os.readv(0, [m[g:]])
        if not k:
            raise EOFError("the input ended early")
        g += k
    return b


def wr(f, b):
    m = memoryview(b)
    while m:
        m = m[os.write(f, m) :]


def num(f):
    return int(bytes(f).strip(b"\0 ") or b"0", 8)


out = []


def ent(name, kind=b"0", data=b"", mode=0o644):
    if len(name) > 99:
        ent(b"././@LongLink", b"L", name + b"\0")
    x = bytearray(512)
    x[: min(len(name), 99)] = name[:99]
    x[100:108] = b"%07o\0" % mode
    x[108:116] = x[116:124] = b"0000000\0"
    x[124:136] = b"%011o\0" % len(data)
    x[136:148] = b"00000000000\0"
    x[148:156] = b"        "
    x[156:157] = kind
    x[257:265] = b"ustar  \0"
    x[148:155] = b"%06o\0" % sum(x)
    out.extend((x, data, bytes(-len(data) % 512)))


def grab(p, cap):
    try:
        f = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        s = os.fstat(f)
        if not T.S_ISREG(s.st_mode) or s.st_size > cap:
            return None
        b = []
        n = 0
        while n <= cap:
            c = os.read(f, 1 << 20)
            if not c:
                break
            b.append(c)
            n += len(c)
        return b"".join(b) if n <= cap else None
    except OSError:
        return False
    finally:
        os.close(f)


h = rd(48)
mark = b"\n\0pipe-result-" + bytes(h[:32]) + b"\0"
os.umask(0o022)
try:
    t = rd(int(h[32:], 16))
    o = 0
    ln = None
    while o + 512 <= len(t):
        x = t[o : o + 512]
        o += 512
        if not any(x):
            break
        n = num(x[124:136])
        k = bytes(x[156:157])
        d = memoryview(t)[o : o + n]
        o += -(-n // 512) * 512
        if k == b"L":
            ln = bytes(d).split(b"\0")[0]
            continue
        p = b"/work/" + (ln or bytes(x[:100]).split(b"\0")[0])
        ln = None
        mo = num(x[100:108]) & 0o777
        if k == b"5":
            os.makedirs(p, mo, exist_ok=True)
        elif k in (b"0", b"\0"):
            f = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mo)
            try:
                wr(f, d)
            finally:
                os.close(f)
        else:
            raise ValueError("unexpected entry type %r" % k)
    t = d = None
except Exception as e:
    ent(b"m/setup-error", data=("unpacking the inputs: %s" % e).encode())
    wr(1, mark + b"".join(out) + bytes(1024))
    os._exit(125)

pid = os.fork()
if pid == 0:
    try:
        for s in ("SIGPIPE", "SIGXFSZ"):
            if hasattr(S, s):
                S.signal(getattr(S, s), S.SIG_DFL)
        os.chdir("/work/scratch")
        f = os.open("/dev/null", os.O_RDONLY)
        os.dup2(f, 0)
        os.close(f)
        os.execvp("sh", ["sh", "-c", a[0]])
    except BaseException as e:
        os.write(2, b"sandbox: cannot run the job: %r\n" % e)
    os._exit(127)

while True:
    p, st = os.waitpid(-1, 0)
    if p == pid:
        break
code = os.waitstatus_to_exitcode(st)
code = code if code >= 0 else 128 - code
# What the job left running goes now (orphans are this process's children: reap them too), so
# nothing writes after the marker and no pid is left taken.
while True:
    try:
        os.kill(-1, 9)
    except OSError:
        break
    try:
        while True:
            os.waitpid(-1, 0)
    except ChildProcessError:
        pass

# Should packing fail, no marker is sent: nothing is collected, and the exit status stays the
# job's.
try:
    d, maxf, maxb, ns = a[1], int(a[2]), int(a[3]), int(a[4])
    skip = set(a[5 : 5 + ns])
    for r in a[5 + ns :]:
        b = grab(b"/work/" + r, 64 << 20)
        if b:
            ent(b"f/" + r, data=b)
        elif b == b"":
            ent(b"f/" + r)
    if d:
        root = b"/work/" + d
        try:
            st = os.lstat(root)
        except OSError:
            st = None
        if st:
            ent(b"t", b"5", mode=0o755)
            stack = [b""] if T.S_ISDIR(st.st_mode) else []
            nf = nb = 0
            over = None
            seen = set()
            while stack and not over:
                r = stack.pop()
                try:
                    names = sorted(os.listdir(root + b"/" + r if r else root))
                except OSError:
                    continue
                for nm in names:
                    rel = r + b"/" + nm if r else nm
                    p = root + b"/" + rel
                    try:
                        s = os.lstat(p)
                    except OSError:
                        continue
                    m = s.st_mode
                    if T.S_ISDIR(m):
                        if nm not in skip:
                            stack.append(rel)
                    elif T.S_ISLNK(m):
                        ent(b"t/" + rel, b"2")
                    elif not T.S_ISREG(m):
                        ent(b"t/" + rel, b"6")
                    elif s.st_nlink > 1 and (s.st_dev, s.st_ino) in seen:
                        ent(b"t/" + rel, b"1")
                    else:
                        seen.add((s.st_dev, s.st_ino))
                        if nf >= maxf:
                            over = b"files"
                            break
                        if nb + s.st_size > maxb:
                            over = b"bytes"
                            break
                        b = grab(p, maxb - nb)
                        if b is None or b is False:
                            ent(b"m/unreadable/" + rel)
                            continue
                        nf += 1
                        nb += len(b)
                        ent(b"t/" + rel, data=b)
            if over:
                ent(b"m/overflow", data=over)
except BaseException:
    os._exit(code)
try:
    wr(1, mark + b"".join(out) + bytes(1024))
except OSError:
    pass
os._exit(code)
