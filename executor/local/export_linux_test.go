package local

// CgroupDir returns the directory of the cgroup v2 at path (as
// /proc/<pid>/cgroup shows it).
var CgroupDir = cgroupDir

// OwnCgroup returns the directory of this process's cgroup v2.
var OwnCgroup = ownCgroup

// DrainCgroup kills everything in a cgroup tree and waits until it is empty.
var DrainCgroup = drain

// RemoveCgroup removes an empty cgroup tree.
var RemoveCgroup = removeCgroup
