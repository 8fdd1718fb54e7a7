package local

// NewWithoutCgroup returns a Local that runs scripts without their own
// cgroup, as where cgroup v2 is not writable.
func NewWithoutCgroup(opts Options) *Local {
	l := New(opts)
	l.noCgroup = true
	return l
}

// NewCgroupByProcs returns a Local that moves each script into its cgroup
// just after it starts, as where the kernel refuses clone3.
func NewCgroupByProcs(opts Options) *Local {
	l := New(opts)
	l.cgroupByProcs = true
	return l
}
