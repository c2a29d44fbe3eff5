// A progress bar for long work, drawn on stderr only when it is a terminal (never in pipes, logs or CI):
// kernel bootstrap on a large dump, a check sweeping every process with YARA. One line, redrawn in place.
import { sanitize } from '../util/sanitize.js';

const WIDTH = 24;

export class ProgressBar {
  readonly enabled: boolean;
  readonly #stream: NodeJS.WriteStream;
  #drawn = false;

  constructor(stream: NodeJS.WriteStream = process.stderr) {
    this.#stream = stream;
    this.enabled = stream.isTTY === true && !process.env.CI && !process.env.NO_PROGRESS;
  }

  /** Show `fraction` (0…1) done with a label. */
  update(fraction: number, label: string): void {
    if (!this.enabled) return;
    const f = Math.max(0, Math.min(1, fraction));
    const filled = Math.round(f * WIDTH);
    const bar = '█'.repeat(filled) + '░'.repeat(WIDTH - filled);
    const cols = this.#stream.columns || 80;
    const line = `${bar} ${String(Math.round(f * 100)).padStart(3)}% ${sanitize(label)}`.slice(0, cols - 1);
    this.#stream.write(`\r\x1b[2K${line}`);
    this.#drawn = true;
  }

  /** Remove the bar so normal output starts on a clean line. */
  done(): void {
    if (this.enabled && this.#drawn) this.#stream.write('\r\x1b[2K');
    this.#drawn = false;
  }
}
