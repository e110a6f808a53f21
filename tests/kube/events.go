package main

// Events as the scheduler and kubelet would record them (core/v1 Events with a source
// component), written in order by one goroutine so that a watcher sees the spawn progress
// in the order it happened. A failed write is retried while the apiserver is away.

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

type pendingEvent struct {
	ev *corev1.Event
}

type eventSink struct {
	cs   kubernetes.Interface
	host string
	ch   chan pendingEvent
}

func newEventSink(ctx context.Context, cs kubernetes.Interface, host string) *eventSink {
	s := &eventSink{cs: cs, host: host, ch: make(chan pendingEvent, 4096)}
	go s.run(ctx)
	return s
}

func podRef(pod *corev1.Pod, container string) corev1.ObjectReference {
	ref := corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace,
		Name: pod.Name, UID: pod.UID, ResourceVersion: pod.ResourceVersion}
	if container != "" {
		ref.FieldPath = fmt.Sprintf("spec.containers{%s}", container)
	}
	return ref
}

func pvcRef(pvc *corev1.PersistentVolumeClaim) corev1.ObjectReference {
	return corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1",
		Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID, ResourceVersion: pvc.ResourceVersion}
}

// emit queues an event; it never blocks the caller for the apiserver.
func (s *eventSink) emit(ref corev1.ObjectReference, typ, reason, msg, component string) {
	now := metav1.NewTime(time.Now())
	host := s.host
	if component != "kubelet" {
		host = ""
	}
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name:      fmt.Sprintf("%s.%x", ref.Name, time.Now().UnixNano()),
			Namespace: ref.Namespace,
		},
		InvolvedObject:      ref,
		Reason:              reason,
		Message:             msg,
		Type:                typ,
		Source:              corev1.EventSource{Component: component, Host: host},
		FirstTimestamp:      now,
		LastTimestamp:       now,
		Count:               1,
		ReportingController: component,
		ReportingInstance:   s.host,
	}
	klog.Infof("event %s %s/%s %s: %s", typ, ref.Namespace, ref.Name, reason, msg)
	select {
	case s.ch <- pendingEvent{ev: ev}:
	default:
		klog.Warningf("event queue full, dropping %s for %s", reason, ref.Name)
	}
}

func (s *eventSink) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case pe := <-s.ch:
			deadline := time.Now().Add(2 * time.Minute)
			for {
				_, err := s.cs.CoreV1().Events(pe.ev.Namespace).Create(ctx, pe.ev, metav1.CreateOptions{})
				if err == nil || apierrors.IsAlreadyExists(err) || apierrors.IsNotFound(err) ||
					apierrors.IsInvalid(err) || apierrors.IsForbidden(err) {
					if err != nil {
						klog.Warningf("event %s dropped: %v", pe.ev.Reason, err)
					}
					break
				}
				if time.Now().After(deadline) || ctx.Err() != nil {
					klog.Warningf("event %s dropped after retries: %v", pe.ev.Reason, err)
					break
				}
				time.Sleep(500 * time.Millisecond)
			}
		}
	}
}
