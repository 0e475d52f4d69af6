// Decides AWS requests as IAM would, with @cloud-copilot/iam-simulate (AGPL-3.0-or-later; run
// as a program of its own, never bundled into anything the project ships: see the README).
//
//   node authorize.mjs < REQUESTS.json
//
// stdin: a JSON list of {principal, action, resource, identityPolicies, resourcePolicy?,
// context}; stdout: a JSON list, one {decision, denials} per request, in order, where decision
// is Allowed, ImplicitlyDenied or ExplicitlyDenied and denials says which kind of policy
// denied (iam-simulate's getDenialReasons). A request the simulator cannot evaluate (a
// malformed policy, an action or ARN it does not know) is an error: exit 2 with the reason.
import { readFileSync } from 'node:fs';
import { getDenialReasons, runSimulation } from '@cloud-copilot/iam-simulate';

const requests = JSON.parse(readFileSync(0, 'utf8'));
const results = [];
for (const request of requests) {
  const simulation = {
    identityPolicies: request.identityPolicies,
    serviceControlPolicies: [],
    resourceControlPolicies: [],
    resourcePolicy: request.resourcePolicy ?? undefined,
    request: {
      principal: request.principal,
      action: request.action,
      resource: { resource: request.resource, accountId: request.resourceAccount },
      contextVariables: request.context,
    },
  };
  const outcome = await runSimulation(simulation, {});
  if (outcome.errors) {
    process.stderr.write(
      `cannot evaluate ${request.action} on ${request.resource}: ${JSON.stringify(outcome.errors)}\n`,
    );
    process.exit(2);
  }
  // A wildcard-only action (Resource "*", e.g. cloudwatch:PutMetricData) has one result per
  // resource type it may touch; the others have one.
  const analyses = (outcome.results ?? [outcome.result]).map((r) => r.analysis);
  results.push({
    decision: outcome.overallResult,
    denials: outcome.overallResult === 'Allowed' ? [] : analyses.flatMap(getDenialReasons),
  });
}
process.stdout.write(JSON.stringify(results) + '\n');
