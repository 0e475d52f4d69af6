// Runs a state machine definition with aws-local-stepfunctions. Every Task state is served
// by `python -m ernie_sm.rehearsal.tasks` (local stand-ins for Lambda, SageMaker and SNS), so the
// states, paths, retries and catches that run are the definition's own.
//
//   node run_state_machine.mjs DEFINITION.json INPUT.json CONTEXT.json
//
// Progress (state transitions) goes to stderr; the execution's output, or its error, is
// printed to stdout as one JSON object: {"output": ...} or {"error": ..., "cause": ...}.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { StateMachine } from 'aws-local-stepfunctions';

const [definitionFile, inputFile, contextFile] = process.argv.slice(2);
const definition = JSON.parse(readFileSync(definitionFile, 'utf8'));
const input = JSON.parse(readFileSync(inputFile, 'utf8'));
const context = JSON.parse(readFileSync(contextFile, 'utf8'));
const python = process.env.REHEARSAL_PYTHON || 'python3';

// A Task state's work, done by the Python stand-in; its error keeps its name so that the
// definition's Retry and Catch match it as they would on AWS.
function localTask(stateName) {
  const resource = definition.States[stateName].Resource;
  return (taskInput) =>
    new Promise((resolve, reject) => {
      const child = spawn(python, ['-m', 'ernie_sm.rehearsal.tasks'], { stdio: ['pipe', 'pipe', 'inherit'] });
      let stdout = '';
      child.stdout.on('data', (chunk) => (stdout += chunk));
      child.on('close', (code) => {
        let reply;
        try {
          reply = JSON.parse(stdout);
        } catch {
          reply = { error: 'States.TaskFailed', cause: `local task for ${stateName} exited with ${code}` };
        }
        if (reply.error) {
          const error = new Error(reply.cause);
          error.name = reply.error;
          reject(error);
        } else {
          resolve(reply.result);
        }
      });
      child.stdin.end(JSON.stringify({ state: stateName, resource, input: taskInput }));
    });
}

const handlers = {};
const waits = {};
const retries = {};
for (const [name, state] of Object.entries(definition.States)) {
  if (state.Type === 'Task') handlers[name] = localTask(name);
  if (state.Type === 'Wait') waits[name] = 0; // a rehearsal does not sit out back-offs
  if (state.Retry) retries[name] = 0; // nor the intervals of a state's Retry
}

const machine = new StateMachine(definition);
const execution = machine.run(input, {
  context,
  overrides: { taskResourceLocalHandlers: handlers, waitTimeOverrides: waits, retryIntervalOverrides: retries },
});

const progress = (async () => {
  for await (const event of execution.eventLogs) {
    if (event.type === 'StateEntered') process.stderr.write(`[state] ${event.state.name}\n`);
    if (event.type === 'StateCaught') process.stderr.write(`[state] ${event.state.name} caught an error\n`);
  }
})();

try {
  const output = await execution.result;
  await progress;
  process.stdout.write(JSON.stringify({ output }) + '\n');
} catch (error) {
  const cause = error.cause ?? {};
  process.stdout.write(
    JSON.stringify({ error: cause.name ?? error.name, cause: cause.message ?? error.message }) + '\n',
  );
}
