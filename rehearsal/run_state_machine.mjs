// Runs a state machine definition with aws-local-stepfunctions. Every Task state is served
// by `python -m ernie_sm.rehearsal.tasks` (local stand-ins for Lambda, SageMaker and SNS), so the
// states, paths, retries and catches that run are the definition's own.
//
//   node run_state_machine.mjs DEFINITION.json INPUT.json CONTEXT.json
//
// Progress (state transitions) goes to stderr; the execution's output, or its error, is
// printed to stdout as one JSON object: {"output": ...} or {"error": ..., "cause": ...}.
//
// Two of Step Functions' limits that the interpreter does not know are played as AWS plays
// them (Step Functions quotas and API reference):
// - a state's input or output, or a task's result, over 256 KiB (262,144 bytes of UTF-8)
//   ends the execution with States.DataLimitExceeded, which no Catch takes;
// - an error's Cause holds at most 32,768 characters. What AWS does with a longer one it
//   does not document; the rehearsal cuts it there, or with REHEARSAL_LONG_CAUSE=keep hands
//   it on whole, so that the definition can be rehearsed both ways.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { StateMachine, ExecutionAbortedError } from 'aws-local-stepfunctions';

export const PAYLOAD_LIMIT = 262144;
export const CAUSE_LIMIT = 32768;

const [definitionFile, inputFile, contextFile] = process.argv.slice(2);
const definition = JSON.parse(readFileSync(definitionFile, 'utf8'));
const input = JSON.parse(readFileSync(inputFile, 'utf8'));
const context = JSON.parse(readFileSync(contextFile, 'utf8'));
const python = process.env.REHEARSAL_PYTHON || 'python3';
const keepLongCause = process.env.REHEARSAL_LONG_CAUSE === 'keep';

// The first payload over the limit: {error, cause}, as AWS would end the execution with.
let overLimit = null;
let execution = null;

function bytes(value) {
  return Buffer.byteLength(JSON.stringify(value ?? null), 'utf8');
}

function checkPayload(stateName, value) {
  if (overLimit || bytes(value) <= PAYLOAD_LIMIT) return;
  overLimit = {
    error: 'States.DataLimitExceeded',
    // AWS's wording (e.g. "The state/task 'UpdateMembers' returned a result with a size
    // exceeding the maximum number of bytes service limit.").
    cause: `The state/task '${stateName}' returned a result with a size exceeding the maximum number of bytes service limit.`,
  };
  execution?.abort();
}

// Lets the event log below see every state entered and left so far (the interpreter moves
// on through Pass and Choice states without waiting for it), so that no task runs after a
// payload over the limit, as none would on AWS.
const settle = () => new Promise((resolve) => setImmediate(resolve));

// A Task state's work, done by the Python stand-in; its error keeps its name so that the
// definition's Retry and Catch match it as they would on AWS.
function localTask(stateName) {
  const resource = definition.States[stateName].Resource;
  return async (taskInput) => {
    await settle();
    if (overLimit) return new Promise(() => {}); // aborted: never settles
    checkPayload(stateName, taskInput);
    const reply = await new Promise((resolve) => {
      const child = spawn(python, ['-m', 'ernie_sm.rehearsal.tasks'], { stdio: ['pipe', 'pipe', 'inherit'] });
      let stdout = '';
      child.stdout.on('data', (chunk) => (stdout += chunk));
      child.on('close', (code) => {
        try {
          resolve(JSON.parse(stdout));
        } catch {
          resolve({ error: 'States.TaskFailed', cause: `local task for ${stateName} exited with ${code}` });
        }
      });
      child.stdin.end(JSON.stringify({ state: stateName, resource, input: taskInput }));
    });
    if (reply.error) {
      const cause = String(reply.cause ?? '');
      const error = new Error(keepLongCause ? cause : cause.slice(0, CAUSE_LIMIT));
      error.name = reply.error;
      throw error;
    }
    checkPayload(stateName, reply.result); // the raw result, before ResultSelector
    if (overLimit) return new Promise(() => {});
    return reply.result;
  };
}

const handlers = {};
const waits = {};
const retries = {};
for (const [name, state] of Object.entries(definition.States)) {
  if (state.Type === 'Task') handlers[name] = localTask(name);
  if (state.Type === 'Wait') waits[name] = 0; // a rehearsal does not sit out back-offs
  if (state.Retry) retries[name] = 0; // nor the intervals between retries
}

const machine = new StateMachine(definition);
execution = machine.run(input, {
  context,
  overrides: {
    taskResourceLocalHandlers: handlers,
    waitTimeOverrides: waits,
    retryIntervalOverrides: retries,
  },
});

const progress = (async () => {
  for await (const event of execution.eventLogs) {
    if (event.type === 'StateEntered') {
      process.stderr.write(`[state] ${event.state.name}\n`);
      checkPayload(event.state.name, event.state.input);
    }
    if (event.type === 'StateExited') checkPayload(event.state.name, event.state.output);
    if (event.type === 'StateCaught') process.stderr.write(`[state] ${event.state.name} caught an error\n`);
  }
})();

let outcome;
try {
  const output = await execution.result;
  await progress;
  outcome = { output };
} catch (error) {
  if (!(error instanceof ExecutionAbortedError)) await progress.catch(() => {});
  const cause = error.cause ?? {};
  outcome = { error: cause.name ?? error.name, cause: cause.message ?? error.message };
}
// A payload over the limit ended the execution there, whatever the interpreter went on to.
if (overLimit) {
  process.stderr.write(`[state] ${overLimit.error}: ${overLimit.cause}\n`);
  outcome = overLimit;
}
process.stdout.write(JSON.stringify(outcome) + '\n');
if (overLimit) process.exit(0); // the aborted interpreter may hold pending work
