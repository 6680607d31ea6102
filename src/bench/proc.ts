import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';

/**
 * Reads a process's CPU time and memory from /proc (Linux), so the pipeline child is
 * measured on its own, apart from Postgres, Redis, the mock and the bench itself.
 */

let clockTicks: number | null = null;

/** USER_HZ (clock ticks per second) of /proc/<pid>/stat; 100 on almost every Linux. */
export function clockTicksPerSecond(): number {
  if (clockTicks !== null) return clockTicks;
  try {
    clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    clockTicks = 100;
  }
  return clockTicks;
}

/** utime + stime of a process, in seconds (resolution 1 / CLK_TCK); null when it is gone. */
export function cpuSeconds(pid: number, file = `/proc/${pid}/stat`): number | null {
  try {
    const stat = readFileSync(file, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields 14 and 15 of stat (utime, stime) are at 11 and 12 once pid and comm are dropped.
    const ticks = Number(fields[11]) + Number(fields[12]);
    return ticks / clockTicksPerSecond();
  } catch {
    return null;
  }
}

export interface MemorySample {
  /** Resident set now, MiB. */
  rssMb: number;
  /** Peak resident set over the process's life (VmHWM), MiB. */
  hwmMb: number;
}

export function memory(pid: number): MemorySample | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
    return { rssMb: round1(kb('VmRSS') / 1024), hwmMb: round1(kb('VmHWM') / 1024) };
  } catch {
    return null;
  }
}

export interface MachineInfo {
  nproc: number;
  cpuModel: string;
  memTotalMb: number;
  node: string;
  os: string;
  hostname: string;
}

export function machineInfo(): MachineInfo {
  let cpuModel = os.cpus()[0]?.model ?? 'unknown';
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) cpuModel = m[1].trim();
  } catch {
    // not Linux: os.cpus() is good enough
  }
  return {
    nproc: os.availableParallelism(),
    cpuModel,
    memTotalMb: Math.round(os.totalmem() / 1024 / 1024),
    node: process.version,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    hostname: os.hostname(),
  };
}

/** Samples a process's RSS every `everyMs`; `take()` returns the peak since the last take. */
export class RssSampler {
  private peak = 0;
  private timer: NodeJS.Timeout | null = null;
  constructor(
    private readonly pid: () => number | null,
    private readonly everyMs = 200,
  ) {}
  start(): void {
    this.timer = setInterval(() => this.sample(), this.everyMs);
    this.timer.unref();
  }
  sample(): void {
    const pid = this.pid();
    if (pid === null) return;
    const m = memory(pid);
    if (m && m.rssMb > this.peak) this.peak = m.rssMb;
  }
  /** Peak RSS (MiB) since the previous take, then resets. */
  take(): number {
    this.sample();
    const peak = this.peak;
    this.peak = 0;
    return peak;
  }
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}

export function round1(n: number): number {
  return Math.round(n * 10) / 10;
}

/**
 * CPU seconds of a process's JS thread (the thread whose id is the pid), of the whole
 * process (every other thread: native libraries' workers, the libuv pool, V8's background
 * GC and compiler; Node 20 leaves them all named `node`, so they are not told apart), and of
 * V8's profiler thread when the process runs with `--cpu-prof` (the caller subtracts it).
 */
export function mainThreadCpu(pid: number): { main: number; total: number; profiler: number } | null {
  const main = cpuSeconds(pid, `/proc/${pid}/task/${pid}/stat`);
  const total = cpuSeconds(pid);
  return main === null || total === null ? null : { main, total, profiler: threadsCpu(pid, PROFILER_THREAD) };
}

/** V8's CPU profiler thread (`--cpu-prof`): the bench's own measurement, not the pipeline's work. */
export const PROFILER_THREAD = 'v8:ProfEvntProc';

/** CPU seconds of the process's threads named `comm` (0 when there are none). */
export function threadsCpu(pid: number, comm: string): number {
  let sum = 0;
  let tids: string[] = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return 0;
  }
  for (const tid of tids) {
    try {
      if (readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim() !== comm) continue;
    } catch {
      continue; // the thread ended
    }
    sum += cpuSeconds(pid, `/proc/${pid}/task/${tid}/stat`) ?? 0;
  }
  return sum;
}
