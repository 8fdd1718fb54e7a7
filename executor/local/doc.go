// Package local runs post-rotation scripts as processes on this machine.
//
// # A run
//
// [Local.Run] writes the script (mode 0700) into a fresh private directory
// (0700) that is the working directory and TMPDIR of the script, and is
// removed afterwards, whatever happened. The script starts with a minimal
// environment: only [Options.InheritEnv] copied from the worker, then
// [Options.Env], then POSTROTATE_ROTATION_ID, POSTROTATE_STEP and
// POSTROTATE_ATTEMPT. Its stdin is exactly Job.Stdin then EOF; a script that
// does not read it is fine. The interpreter follows
// [github.com/postrotate/postrotate/executor.Argv].
//
// # Killing the process tree
//
// At the timeout, or when the context is cancelled, the whole process tree
// is killed. On Unix the script leads its own process group: SIGTERM goes to
// the group, then, after [Options.KillGrace], SIGKILL; a process that left
// the group (setsid) is out of reach, but cannot hold Run up for longer than
// [Options.WaitDelay] by keeping the output pipes open. On Windows the script
// is put in a Job Object right after it starts and the job is terminated;
// closing the job at the end of Run also ends any process the script left
// behind. On Unix, a process left running in the background by a script that
// exited by itself is not killed (scripts that start daemons keep working);
// Run stops reading its output after [Options.WaitDelay].
//
// Output captured before a kill is kept in the Result.
package local
