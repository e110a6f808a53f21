package main

// Scheduling predicates, taken from the helpers the real scheduler uses.

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	resourcehelper "k8s.io/component-helpers/resource"
	schedhelper "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
	"k8s.io/klog/v2"
)

func labelsEverything() labels.Selector { return labels.Everything() }

// requiredAffinityMatches covers spec.nodeSelector and required node affinity.
func requiredAffinityMatches(pod *corev1.Pod, node *corev1.Node) (bool, error) {
	return nodeaffinity.GetRequiredNodeAffinity(pod).Match(node)
}

// untoleratedTaint returns the first NoSchedule/NoExecute taint the pod does not tolerate.
func untoleratedTaint(pod *corev1.Pod, node *corev1.Node) (corev1.Taint, bool) {
	filter := func(t *corev1.Taint) bool {
		return t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute
	}
	return schedhelper.FindMatchingUntoleratedTaint(klog.Background(), node.Spec.Taints,
		pod.Spec.Tolerations, filter, false)
}

// podRequests is the pod's effective request (containers summed, init containers maxed,
// overhead added), as the scheduler's fit predicate computes it.
func podRequests(pod *corev1.Pod) corev1.ResourceList {
	return resourcehelper.PodRequests(pod, resourcehelper.PodResourcesOptions{})
}
