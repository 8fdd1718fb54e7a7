// Package plan turns a PAM User's rotation into the ordered steps that run
// its post-rotation scripts (design brief §4).
//
// # Order
//
// Scripts run strictly in sequence:
//
//  1. the scripts attached to the PAM User record ([PhaseUser]),
//  2. then those on its PAM Machine, Database or Directory ([PhaseResource]),
//  3. then those on its PAM Configuration ([PhaseConfiguration]);
//
// within one record, in the order attached. Step.Index numbers them from 1.
//
// # Where
//
// A PAM Machine's scripts run on the machine: on the worker installed on it
// (Host is the machine's worker, Runner [RunnerLocal]), or, when it has a
// connection instead, from the configuration's gateway over ssh or winrm
// (Host is the gateway, Runner the protocol, Target the machine's uid).
// Every other script runs on the PAM Configuration's gateway (Runner
// [RunnerLocal]).
//
// # Payload
//
// [Plan.Input] gives a step's Keeper-compatible payload input: the
// configuration, the resource, the step's additional credential records and
// the user. [Plan.Secrets] lists the secret values of every record involved,
// for masking.
package plan
