# Python stdlib smoke test run inside the micro-VM by vm_run_test.py: each line "name: ok ..." or
# "name: FAIL ..."; subprocess and threading are expected to fail (one process, one thread).
import json, re, sqlite3, hashlib, zlib, tempfile, os, pathlib, shutil, decimal, datetime, io, csv, random, math, gzip, pickle, struct, time
out = []
def t(name, f):
    try:
        r = f(); out.append(f"{name}: ok {r!r}"[:100])
    except Exception as e:
        out.append(f"{name}: FAIL {type(e).__name__}: {e}"[:160])
t("json", lambda: json.loads(json.dumps({"a": [1, 2]})))
t("re", lambda: re.findall(r"\d+", "a1b22"))
def sq():
    c = sqlite3.connect(":memory:"); c.execute("create table t(x)"); c.executemany("insert into t values (?)", [(i,) for i in range(100)])
    return c.execute("select sum(x) from t").fetchone()
t("sqlite mem", sq)
def sqf():
    d = tempfile.mkdtemp(); c = sqlite3.connect(os.path.join(d, "db.sqlite")); c.execute("create table t(x)"); c.execute("insert into t values (1)"); c.commit(); c.close()
    c = sqlite3.connect(os.path.join(d, "db.sqlite")); r = c.execute("select * from t").fetchall(); shutil.rmtree(d); return r
t("sqlite file", sqf)
t("hashlib", lambda: hashlib.sha256(b"x").hexdigest()[:8])
t("zlib", lambda: len(zlib.compress(b"a" * 10000)))
t("gzip", lambda: gzip.decompress(gzip.compress(b"hello")))
def tmp():
    with tempfile.NamedTemporaryFile("w+", delete=True) as f:
        f.write("abc"); f.flush(); f.seek(0); return f.read()
t("tempfile", tmp)
t("pathlib glob", lambda: len(list(pathlib.Path("/usr/lib/python3.11/json").glob("*.py"))))
t("os.walk", lambda: sum(len(f) for _, _, f in os.walk("/usr/lib/python3.11/json")))
t("decimal", lambda: str(decimal.Decimal(1) / 7)[:10])
t("datetime", lambda: datetime.datetime.now().year > 2000)
t("random", lambda: random.random() < 1)
t("pickle", lambda: pickle.loads(pickle.dumps([1, "a"])))
def sub():
    import subprocess; return subprocess.run(["true"]).returncode
t("subprocess", sub)
def thr():
    import threading; th = threading.Thread(target=lambda: None); th.start(); th.join(); return True
t("threading", thr)
def aio():
    import asyncio
    async def f(): await asyncio.sleep(0.01); return 5
    return asyncio.run(f())
t("asyncio", aio)
def mm():
    import mmap
    d = tempfile.mkdtemp(); p = os.path.join(d, "f"); open(p, "wb").write(b"x" * 8192)
    with open(p, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ); r = m[:3]; m.close()
    shutil.rmtree(d); return r
t("mmap file ro", mm)
t("anon mmap shared", lambda: (lambda m: (m.write(b"hi"), m[:2])[1])(__import__("mmap").mmap(-1, 4096)))
t("big list", lambda: len([i for i in range(3_000_000)]))
t("os.getcwd", lambda: os.getcwd())
t("uname", lambda: os.uname().sysname)
t("cpu_count", lambda: os.cpu_count())
t("getrlimit", lambda: __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE))
def np_():
    import numpy as np; a = np.random.rand(200, 200); return round(float(np.linalg.inv(a) @ a).__class__ is float) if False else bool(np.allclose(np.linalg.inv(a) @ a, np.eye(200)))
t("numpy linalg", np_)
def pd_():
    import pandas as pd
    d = tempfile.mkdtemp(); p = os.path.join(d, "x.csv")
    pd.DataFrame({"a": range(5)}).to_csv(p, index=False); r = int(pd.read_csv(p).a.sum()); shutil.rmtree(d); return r
t("pandas csv", pd_)
print("\n".join(out))
