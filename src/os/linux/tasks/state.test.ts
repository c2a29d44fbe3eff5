import { test } from 'node:test';
import assert from 'node:assert/strict';
import { taskStateLetter } from './state.js';

test('state letters follow the kernel: the highest reported bit wins, idle and RT-lock waits are special', () => {
  const cases: [number, number, string][] = [
    [0x0, 0, 'R'],
    [0x1, 0, 'S'],
    [0x2, 0, 'D'],
    [0x402, 0, 'I'], // TASK_IDLE = UNINTERRUPTIBLE | NOLOAD
    [0x4, 0, 'T'],
    [0x104, 0, 'T'], // TASK_STOPPED = WAKEKILL | __TASK_STOPPED
    [0x8, 0, 't'],
    [0x80, 0x20, 'Z'], // TASK_DEAD with exit_state EXIT_ZOMBIE
    [0x80, 0x10, 'X'],
    [0x40, 0, 'P'],
    [0x1000, 0, 'D'], // TASK_RTLOCK_WAIT shows as D
    [0x2001, 0, 'S'], // TASK_FREEZABLE is not reported
    [0x200, 0, 'R'], // TASK_WAKING: not a reported state
    [0xffffffff, 0xffffffff, 'D'], // garbage: still one letter
  ];
  for (const [state, exit, letter] of cases) {
    assert.equal(
      taskStateLetter(state, exit),
      letter,
      `state 0x${state.toString(16)} exit 0x${exit.toString(16)}`,
    );
  }
});
