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
// is killed: SIGTERM, then, after [Options.KillGrace], SIGKILL to what is
// left (on Windows the tree is terminated at once). No process the script
// started survives it, not even one that called setsid, wherever
// [Containment] returns nil:
//
//   - On Linux where cgroup v2 is writable, each script runs in a cgroup of
//     its own, <worker's cgroup>/postrotate-<pid>-<start time>/run-<n>,
//     started right into it (clone3 with CLONE_INTO_CGROUP; where the kernel
//     refuses that, moved in just after it starts, and a process it forks
//     in that instant stays outside). SIGTERM goes to the script's process
//     group and to the processes of the cgroup that left it, SIGKILL to the
//     group and to the whole cgroup (cgroup.kill, or each listed process
//     before Linux 5.14); Run returns once the cgroup is empty (waiting 5s
//     at most) and removes it. No controller is enabled in these cgroups:
//     they only group processes, and limit nothing. Under systemd, give the
//     worker's unit Delegate=yes, so that the cgroups below its own are the
//     worker's to manage.
//   - On Windows the script is put in a Job Object right after it starts
//     and the job is terminated; closing the job at the end of Run also
//     ends any process the script left behind.
//   - Elsewhere (other Unix systems, or Linux where cgroup v2 is not
//     writable, [Containment] says why), the script leads its own process
//     group and the group is killed: a process that left it with setsid is
//     out of reach, but cannot hold Run up for longer than
//     [Options.WaitDelay] by keeping the output pipes open. The worker logs
//     that once when it starts.
//
// # When the worker dies
//
// On Linux a script is started with a parent-death signal: when the worker
// dies, however it dies (SIGKILL, OOM killer), the kernel kills the script
// with SIGKILL. Strictly, the signal follows the thread that started the
// script: Run must not be called from a goroutine locked to its thread with
// runtime.LockOSThread that may end while the script runs. The processes
// the script started outlive it, in its cgroup: [Sweep], which the worker
// calls when it starts, kills them and removes the cgroups of worker
// processes that have ended, so that a restarted worker does not run the
// next step beside them. It looks beside the worker's own cgroup, where a
// worker restarted in place (by systemd, a container's init, a supervisor)
// runs again; systemd kills the whole cgroup of a stopped service anyway. On
// Windows the Job Object, closed by the system when the worker dies, kills
// every process of the script.
//
// # What a script leaves running
//
// A process left running in the background by a script that exited by
// itself is not killed: scripts that start daemons keep working. On Linux
// with cgroups it is moved from the script's cgroup back to the worker's
// own, where it would have been without one, and the script's cgroup is
// removed: a cgroup lives only as long as its script. Its timeout and a
// stop no longer reach it, and neither does a later sweep. Run stops
// reading its output after [Options.WaitDelay]. On Windows, closing the job
// at the end of Run ends it.
//
// Output captured before a kill is kept in the Result.
package local
