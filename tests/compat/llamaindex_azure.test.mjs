// Compatibility test: the real LlamaIndex.TS Azure dynamic-sessions tool
// (`AzureDynamicSessionTool` from the npm package @llamaindex/azure) against a
// sandpool server started from $SANDPOOL_BIN on 127.0.0.1.
//
// The tool is used exactly as an application would use it. The only things we
// provide are the pool management endpoint and a dummy token provider (so the
// tool never builds a DefaultAzureCredential or talks to Entra ID). A thin spy
// around globalThis.fetch records every request/response pair, refuses any
// address other than 127.0.0.1, and puts the exchange into failure messages so
// a mismatch shows what the client sent and what the server answered.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { randomUUID } from "node:crypto";

import { AzureDynamicSessionTool } from "@llamaindex/azure";

const SANDPOOL_BIN = process.env.SANDPOOL_BIN;
const CLIENT_FAILURE = "Error: Failed to execute Python code.";

// ---------------------------------------------------------------- fetch spy

const exchanges = [];
const realFetch = globalThis.fetch;

function headersToObject(h) {
  const out = {};
  if (!h) return out;
  if (typeof h.forEach === "function") {
    h.forEach((v, k) => {
      out[k] = v;
    });
  } else {
    for (const [k, v] of Object.entries(h)) out[k] = v;
  }
  return out;
}

function describeBody(body) {
  if (body == null) return null;
  if (typeof body === "string") return body;
  if (body instanceof FormData) {
    const parts = [];
    for (const [name, value] of body.entries()) {
      if (typeof value === "string") parts.push({ name, value });
      else parts.push({ name, filename: value.name, size: value.size, type: value.type });
    }
    return { multipart: parts };
  }
  return `<${Object.prototype.toString.call(body)}>`;
}

globalThis.fetch = async (input, init = {}) => {
  const url = new URL(typeof input === "string" ? input : input.url ?? String(input));
  if (url.hostname !== "127.0.0.1") {
    throw new Error(`compat test refuses to contact ${url.origin}: only 127.0.0.1 is allowed`);
  }
  const record = {
    request: {
      method: init.method ?? "GET",
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      headers: headersToObject(init.headers),
      body: describeBody(init.body),
    },
  };
  exchanges.push(record);
  const response = await realFetch(input, init);
  let text;
  try {
    text = await response.clone().text();
  } catch (e) {
    text = `<unreadable: ${e}>`;
  }
  record.response = {
    status: response.status,
    headers: headersToObject(response.headers),
    body: text.length > 2000 ? text.slice(0, 2000) + "…" : text,
  };
  return response;
};

function lastExchange() {
  return exchanges[exchanges.length - 1];
}

function explain(what, extra) {
  return `${what}\n` +
    (extra !== undefined ? `tool returned: ${JSON.stringify(extra, null, 2)}\n` : "") +
    `last HTTP exchange: ${JSON.stringify(lastExchange(), null, 2)}`;
}

// ---------------------------------------------------------------- server

let server;        // ChildProcess
let serverExit;    // Promise resolved on exit
let workDir;
let port;
let serverLog = "";

async function waitForPort(portFile, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (server.exitCode !== null || server.signalCode !== null) {
      throw new Error(`sandpool exited early (code ${server.exitCode}, signal ${server.signalCode}):\n${serverLog}`);
    }
    try {
      const text = (await readFile(portFile, "utf8")).trim();
      if (/^\d+$/.test(text)) return Number(text);
    } catch {
      // not written yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`sandpool did not write ${portFile} within ${timeoutMs} ms:\n${serverLog}`);
}

before(async () => {
  assert.ok(SANDPOOL_BIN, "set SANDPOOL_BIN to the sandpool binary");
  workDir = await mkdtemp(path.join(tmpdir(), "sandpool-compat-llamaindex-"));
  const portFile = path.join(workDir, "port");
  server = spawn(
    SANDPOOL_BIN,
    ["serve", "--listen", "127.0.0.1:0", "--port-file", portFile, "--pool-ready", "1"],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  serverExit = new Promise((resolve) => server.once("exit", resolve));
  const keep = (chunk) => {
    serverLog += chunk.toString();
    if (serverLog.length > 20000) serverLog = serverLog.slice(-20000);
  };
  server.stdout.on("data", keep);
  server.stderr.on("data", keep);
  port = await waitForPort(portFile, 60000);
});

after(async () => {
  if (server && server.exitCode === null && server.signalCode === null) {
    process.kill(server.pid, "SIGTERM");
    const timer = setTimeout(() => {
      if (server.exitCode === null && server.signalCode === null) process.kill(server.pid, "SIGKILL");
    }, 15000);
    await serverExit;
    clearTimeout(timer);
  }
  globalThis.fetch = realFetch;
  if (workDir) await rm(workDir, { recursive: true, force: true });
  if (process.env.COMPAT_DUMP_EXCHANGES) {
    console.log(JSON.stringify(exchanges, null, 2));
  }
});

// ---------------------------------------------------------------- helpers

let tokenCalls = 0;
const fakeTokenProvider = async () => {
  tokenCalls += 1;
  return "compat-dummy-token";
};

function makeTool(endpointPath = "/pools/default", sessionId = randomUUID()) {
  return new AzureDynamicSessionTool({
    poolManagementEndpoint: `http://127.0.0.1:${port}${endpointPath}`,
    sessionId,
    azureADTokenProvider: fakeTokenProvider,
  });
}

function assertNoClientFailure(out) {
  assert.ok(out && typeof out === "object", explain("tool.call returned no object", out));
  assert.ok(
    !String(out.stderr ?? "").startsWith(CLIENT_FAILURE),
    explain("the client failed to handle the server's answer (its catch-all error)", out),
  );
}

async function streamToText(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks).toString("utf8");
}

// ---------------------------------------------------------------- tests

test("print(6*7): stdout carries 42 (pool endpoint /pools/default)", { timeout: 60000 }, async () => {
  const sessionId = randomUUID();
  const tool = makeTool("/pools/default", sessionId);
  const out = await tool.call({ code: "print(6*7)" });

  // What the client sent.
  const { request, response } = lastExchange();
  assert.equal(request.method, "POST");
  assert.equal(request.path, "/pools/default/python/execute");
  assert.equal(request.query.identifier, sessionId);
  assert.equal(request.headers.Authorization, "Bearer compat-dummy-token");
  assert.ok(tokenCalls > 0, "the fake token provider was used");
  assert.equal(response.status, 200, explain("python/execute status", out));

  assertNoClientFailure(out);
  assert.match(String(out.stdout), /42/, explain("stdout should contain 42", out));
  assert.equal(out.stderr, "", explain("stderr should be empty", out));
});

test("a cell ending in a None-valued call (list.append) is handled by the client", { timeout: 60000 }, async () => {
  // Typical LLM-written code ends with a call that returns None. The client reads
  // `output.result.type` whenever `result` is not a string, so a JSON null breaks it.
  const tool = makeTool();
  const out = await tool.call({ code: "items = []\nitems.append(42)" });
  assertNoClientFailure(out);
  assert.equal(out.stderr, "", explain("stderr should be empty", out));
  const check = await tool.call({ code: "items" });
  assertNoClientFailure(check);
  assert.equal(String(check.result), "[42]", explain("items should be [42]", check));
});

test("state persists across calls with the same session", { timeout: 60000 }, async () => {
  const tool = makeTool();
  const first = await tool.call({ code: "x = 21" });
  assertNoClientFailure(first);
  assert.equal(first.stderr, "", explain("assignment should not fail", first));
  const second = await tool.call({ code: "x * 2" });
  assertNoClientFailure(second);
  assert.equal(String(second.result), "42", explain("x * 2 should be 42", second));
});

test("an expression's value comes back as result", { timeout: 60000 }, async () => {
  const tool = makeTool();
  const num = await tool.call({ code: "a = 40\na + 2" });
  assertNoClientFailure(num);
  assert.equal(String(num.result), "42", explain("a + 2 should be 42", num));
  assert.equal(num.stdout, "", explain("no stdout expected", num));

  const str = await tool.call({ code: "'hello' + ' ' + 'world'" });
  assertNoClientFailure(str);
  assert.equal(str.result, "hello world", explain("string expression", str));
});

test("an exception comes back in stderr", { timeout: 60000 }, async () => {
  const tool = makeTool();
  const out = await tool.call({ code: "1/0" });
  assertNoClientFailure(out);
  assert.match(String(out.stderr), /ZeroDivisionError/, explain("traceback expected in stderr", out));

  // The session is still usable after the exception.
  const after = await tool.call({ code: "'still alive'" });
  assertNoClientFailure(after);
  assert.equal(after.result, "still alive", explain("session usable after an exception", after));
});

test("different session ids do not share state", { timeout: 60000 }, async () => {
  const a = makeTool();
  const b = makeTool();
  const setA = await a.call({ code: "only_in_a = 1\n'set'" });
  assertNoClientFailure(setA);
  assert.equal(setA.result, "set", explain("set in session a", setA));
  const readB = await b.call({ code: "only_in_a" });
  assertNoClientFailure(readB);
  assert.match(String(readB.stderr), /NameError/, explain("session b must not see a's variable", readB));
});

test("the default pool is also served at the root endpoint", { timeout: 60000 }, async () => {
  for (const endpoint of ["", "/", "/pools/default/"]) {
    const tool = makeTool(endpoint);
    const out = await tool.call({ code: "print('root ok')\n7 * 6" });
    const { request } = lastExchange();
    assert.equal(
      request.path,
      endpoint.startsWith("/pools") ? "/pools/default/python/execute" : "/python/execute",
    );
    assertNoClientFailure(out);
    assert.match(String(out.stdout), /root ok/, explain(`stdout via endpoint '${endpoint}'`, out));
    assert.equal(String(out.result), "42", explain(`result via endpoint '${endpoint}'`, out));
  }
});

test("files: upload, list, read from code, download", { timeout: 60000 }, async () => {
  const tool = makeTool();
  const content = "a,b\n1,2\n3,4\n";

  const uploaded = await tool.uploadFile({
    data: new Blob([content], { type: "text/csv" }),
    remoteFilename: "data.csv",
  });
  {
    const { request, response } = lastExchange();
    assert.equal(request.method, "POST");
    assert.equal(request.path, "/pools/default/files/upload");
    assert.equal(response.status, 200, explain("upload status", uploaded));
  }
  assert.equal(uploaded.filename, "data.csv", explain("uploaded metadata", uploaded));
  assert.equal(uploaded.size, Buffer.byteLength(content), explain("uploaded size", uploaded));
  assert.ok(uploaded.last_modified_time, explain("uploaded last_modified_time", uploaded));

  const listed = await tool.listFiles();
  assert.ok(Array.isArray(listed), explain("listFiles returns an array", listed));
  const entry = listed.find((f) => f && f.filename === "data.csv");
  assert.ok(entry, explain("data.csv in listFiles()", listed));
  assert.equal(entry.size, Buffer.byteLength(content));

  const read = await tool.call({ code: "open('/mnt/data/data.csv').read()" });
  assertNoClientFailure(read);
  assert.equal(read.result, content, explain("code reads the uploaded file", read));

  const made = await tool.call({
    code: "with open('made.txt', 'w') as f:\n    f.write('made in session')\n'written'",
  });
  assertNoClientFailure(made);
  assert.equal(made.result, "written", explain("code writes a file", made));

  const stream = await tool.downloadFile({ remoteFilename: "made.txt" });
  {
    const { request, response } = lastExchange();
    assert.equal(request.method, "GET");
    assert.equal(request.path, "/pools/default/files/content/made.txt");
    assert.equal(response.status, 200, explain("download status"));
  }
  assert.ok(stream, "downloadFile returns a stream");
  assert.equal(await streamToText(stream), "made in session");

  const again = await tool.downloadFile({ remoteFilename: "data.csv" });
  assert.equal(await streamToText(again), content);
});
