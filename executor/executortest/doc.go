// Package executortest is the conformance suite every
// [github.com/postrotate/postrotate/executor.Executor] that runs scripts
// runs: the local, SSH and WinRM executors.
//
// # Usage
//
//	func TestConformance(t *testing.T) {
//		executortest.Run(t, executortest.Harness{
//			New: func(t *testing.T) executor.Executor { return local.New(local.Options{}) },
//		})
//	}
//
// # What it checks
//
// Exit 0 and exit 3 are Results, stdout and stderr are kept apart, stdin is
// exactly the job's bytes then EOF, the three ways Keeper scripts read the
// payload (Python "for line in sys.stdin", bash "IFS= read -r" and
// "cat | base64 --decode") all decode it, a script past its timeout and a
// cancelled run have their whole process tree killed with the output printed
// before the kill kept, a tree that ignores SIGTERM is killed all the same
// (with [Harness.TermBeforeKill], after the script got SIGTERM: the
// escalation SIGTERM, grace, SIGKILL), 50 MB of output are capped with head
// and tail kept, secrets are masked in every form, Result.Command holds no
// secret, the POSTROTATE_* variables are set, and a script that never reads
// stdin completes.
//
// The scripts are POSIX sh, bash and python3, run on the executor's target
// host, which needs sh, bash, python3, od, base64, yes, head and sleep.
package executortest
