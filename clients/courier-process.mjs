// Starts the courier binary for the Node test suites: SQLite in `dataDir`, JSON logs on
// stdout, and the port it listens on read from its "courier listening" log line (port 0
// lets the kernel choose one).
import { spawn } from "node:child_process";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
export const COURIER_BIN = process.env.COURIER_BIN ?? resolve(HERE, "../target/debug/courier");

/**
 * Resolves to `{ child, port, exited }` once the server listens; `env` adds settings
 * (`COURIER_CONFIG`, `RUST_LOG`, …) to the defaults below.
 */
export async function startCourier({ dataDir, port = 0, env = {} }) {
  const child = spawn(COURIER_BIN, ["serve"], {
    env: {
      ...process.env,
      DATABASE_URL: "",
      COURIER_DATABASE_URL: "",
      COURIER_LISTEN: `127.0.0.1:${port}`,
      COURIER_DATA_DIR: dataDir,
      COURIER_BCRYPT_COST: "4",
      COURIER_LOG_FORMAT: "json",
      RUST_LOG: "warn,courier=info",
      ...env,
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const exited = new Promise((resolveExit) => child.once("exit", resolveExit));
  const listening = await new Promise((resolvePort, reject) => {
    const timer = setTimeout(() => reject(new Error("courier did not start")), 60000);
    let buffered = "";
    child.stdout.on("data", (chunk) => {
      buffered += chunk;
      const lines = buffered.split("\n");
      buffered = lines.pop();
      for (const line of lines) {
        try {
          const entry = JSON.parse(line);
          if (entry.fields?.message === "courier listening") {
            clearTimeout(timer);
            resolvePort(entry.fields.port);
          }
        } catch {
          // a line that is not JSON
        }
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`courier exited with ${code}`));
    });
  });
  return { child, port: listening, exited };
}
