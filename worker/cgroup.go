package worker

import "github.com/postrotate/postrotate/executor/local"

// checkLocalScripts, when the worker runs local scripts, warns where they
// run without their own cgroup (a child that calls setsid escapes their
// kill), and kills what the scripts of a dead worker process left running
// (see local.Sweep), before the first task runs.
func (w *Worker) checkLocalScripts() {
	runsLocal := false
	for _, ex := range w.opts.Executors {
		_, ok := ex.(*local.Local)
		runsLocal = runsLocal || ok
	}
	if !runsLocal {
		return
	}
	if err := local.Containment(); err != nil {
		w.log.Warn().Err(err).Msg("scripts run without their own cgroup; a child that calls setsid can outlive a timeout or a stop")
	}
	switch killed, err := local.Sweep(); {
	case err != nil:
		w.log.Warn().Err(err).Int("killed", killed).Msg("sweep the cgroups of dead worker processes")
	case killed > 0:
		w.log.Warn().Int("killed", killed).Msg("killed what the scripts of a dead worker process left running")
	}
}
