package main

// The persistent-volume controller and a hostPath provisioner in one: a claim of class
// "standard" (or none) gets a PersistentVolume whose hostPath is DIR/pv/NAME, both marked
// Bound; a claim naming an unknown class stays Pending with a ProvisioningFailed event.
// Deleting a claim removes the kubernetes.io/pvc-protection finalizer once no pod uses it,
// and then, per the class's reclaimPolicy (Delete for "standard"), deletes the volume and
// its directory (Retain: the volume is marked Released and the directory kept).

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

const (
	pvcProtection      = "kubernetes.io/pvc-protection"
	pvProtection       = "kubernetes.io/pv-protection"
	annProvisionedBy   = "pv.kubernetes.io/provisioned-by"
	annBindCompleted   = "pv.kubernetes.io/bind-completed"
	annBoundByCtrl     = "pv.kubernetes.io/bound-by-controller"
	annStorageProv     = "volume.kubernetes.io/storage-provisioner"
	annStorageProvBeta = "volume.beta.kubernetes.io/storage-provisioner"
)

func (k *kubelet) patch(kind string, ns, name string, body interface{}, sub ...string) error {
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	switch kind {
	case "pvc":
		_, err = k.cs.CoreV1().PersistentVolumeClaims(ns).Patch(k.ctx, name, types.MergePatchType, data,
			metav1.PatchOptions{}, sub...)
	case "pv":
		_, err = k.cs.CoreV1().PersistentVolumes().Patch(k.ctx, name, types.MergePatchType, data,
			metav1.PatchOptions{}, sub...)
	default:
		err = fmt.Errorf("patch: unknown kind %s", kind)
	}
	return err
}

func without(list []string, s string) []string {
	out := []string{}
	for _, v := range list {
		if v != s {
			out = append(out, v)
		}
	}
	return out
}

func has(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// pvcInUse tells whether a pod that has not finished still references the claim.
func (k *kubelet) pvcInUse(pvc *corev1.PersistentVolumeClaim) bool {
	pods, err := k.podLister.Pods(pvc.Namespace).List(labelsEverything())
	if err != nil {
		return true
	}
	for _, p := range pods {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		for _, v := range p.Spec.Volumes {
			if v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == pvc.Name {
				return true
			}
		}
	}
	return false
}

func (k *kubelet) pvcEventOnce(pvc *corev1.PersistentVolumeClaim, typ, reason, msg, component string) {
	k.schedMu.Lock()
	defer k.schedMu.Unlock()
	if k.pvcMsg[pvc.UID] == reason+msg {
		return
	}
	k.pvcMsg[pvc.UID] = reason + msg
	k.events.emit(pvcRef(pvc), typ, reason, msg, component)
}

func (k *kubelet) syncPVC(key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pvc, err := k.pvcLister.PersistentVolumeClaims(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return k.reclaimVolumesOf(ns, name)
	}
	if err != nil {
		return err
	}
	if pvc.DeletionTimestamp != nil {
		if !has(pvc.Finalizers, pvcProtection) || k.pvcInUse(pvc) {
			return nil
		}
		return k.patch("pvc", ns, name, map[string]interface{}{"metadata": map[string]interface{}{
			"finalizers":      without(pvc.Finalizers, pvcProtection),
			"resourceVersion": pvc.ResourceVersion,
		}})
	}
	if pvc.Status.Phase == corev1.ClaimBound {
		return nil
	}
	class := ""
	if pvc.Spec.StorageClassName != nil {
		class = *pvc.Spec.StorageClassName
	}
	if class == "" {
		// No class (the DefaultStorageClass admission plugin normally fills it in) or
		// the empty class: both get the default class here.
		class = storageClassName
	}
	sc, err := k.scLister.Get(class)
	if apierrors.IsNotFound(err) {
		k.pvcEventOnce(pvc, corev1.EventTypeWarning, "ProvisioningFailed",
			fmt.Sprintf("storageclass.storage.k8s.io %q not found", class), "persistentvolume-controller")
		return nil
	}
	if err != nil {
		return err
	}
	if sc.Provisioner != provisionerName {
		k.pvcEventOnce(pvc, corev1.EventTypeNormal, "ExternalProvisioning",
			fmt.Sprintf("Waiting for a volume to be created either by the external provisioner '%s' "+
				"or manually by the system administrator. If volume creation is delayed, please verify "+
				"that the provisioner is running and correctly registered.", sc.Provisioner),
			"persistentvolume-controller")
		return nil
	}
	pvName := "pvc-" + string(pvc.UID)
	size, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	if !ok {
		size = resource.MustParse("1Gi")
	}
	pv, err := k.pvLister.Get(pvName)
	if apierrors.IsNotFound(err) {
		hostDir := filepath.Join(k.dir, "pv", pvName)
		if err := os.MkdirAll(hostDir, 0o777); err != nil {
			return err
		}
		// World-writable like a fresh volume a container of any uid may use.
		_ = os.Chmod(hostDir, 0o777)
		reclaim := corev1.PersistentVolumeReclaimDelete
		if sc.ReclaimPolicy != nil {
			reclaim = *sc.ReclaimPolicy
		}
		dirType := corev1.HostPathDirectoryOrCreate
		pv = &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: pvName, Annotations: map[string]string{
				annProvisionedBy: provisionerName}},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:    corev1.ResourceList{corev1.ResourceStorage: size},
				AccessModes: pvc.Spec.AccessModes,
				PersistentVolumeSource: corev1.PersistentVolumeSource{
					HostPath: &corev1.HostPathVolumeSource{Path: hostDir, Type: &dirType}},
				ClaimRef: &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1",
					Namespace: ns, Name: name, UID: pvc.UID, ResourceVersion: pvc.ResourceVersion},
				PersistentVolumeReclaimPolicy: reclaim,
				StorageClassName:              class,
				VolumeMode:                    pvc.Spec.VolumeMode,
			},
		}
		pv, err = k.cs.CoreV1().PersistentVolumes().Create(k.ctx, pv, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("pv %s exists but is not in the cache yet", pvName)
		}
		if err != nil {
			return err
		}
		k.events.emit(pvcRef(pvc), corev1.EventTypeNormal, "ProvisioningSucceeded",
			fmt.Sprintf("Successfully provisioned volume %s", pvName), provisionerName)
	} else if err != nil {
		return err
	}
	if pv.Status.Phase != corev1.VolumeBound {
		if err := k.patch("pv", "", pvName, map[string]interface{}{
			"status": map[string]interface{}{"phase": corev1.VolumeBound}}, "status"); err != nil {
			return err
		}
	}
	if pvc.Spec.VolumeName == "" {
		err := k.patch("pvc", ns, name, map[string]interface{}{
			"metadata": map[string]interface{}{
				"uid": pvc.UID,
				"annotations": map[string]string{annBindCompleted: "yes", annBoundByCtrl: "yes",
					annStorageProv: provisionerName, annStorageProvBeta: provisionerName},
			},
			"spec": map[string]interface{}{"volumeName": pvName},
		})
		if err != nil {
			return err
		}
	}
	return k.patch("pvc", ns, name, map[string]interface{}{
		"metadata": map[string]interface{}{"uid": pvc.UID},
		"status": map[string]interface{}{
			"phase":       corev1.ClaimBound,
			"accessModes": pvc.Spec.AccessModes,
			"capacity":    corev1.ResourceList{corev1.ResourceStorage: size},
		}}, "status")
}

// reclaimVolumesOf applies the reclaim policy to our volumes whose claim is gone.
func (k *kubelet) reclaimVolumesOf(ns, name string) error {
	pvs, err := k.pvLister.List(labelsEverything())
	if err != nil {
		return err
	}
	for _, pv := range pvs {
		ref := pv.Spec.ClaimRef
		if ref == nil || ref.Namespace != ns || ref.Name != name ||
			pv.Annotations[annProvisionedBy] != provisionerName {
			continue
		}
		if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
			if pv.Status.Phase != corev1.VolumeReleased {
				if err := k.patch("pv", "", pv.Name, map[string]interface{}{
					"status": map[string]interface{}{"phase": corev1.VolumeReleased}}, "status"); err != nil {
					return err
				}
			}
			continue
		}
		if pv.Spec.HostPath != nil {
			dir := pv.Spec.HostPath.Path
			// Only ever remove what we provisioned under DIR/pv.
			if strings.HasPrefix(dir, filepath.Join(k.dir, "pv")+"/") {
				if err := os.RemoveAll(dir); err != nil {
					klog.Warningf("removing %s: %v", dir, err)
				}
			}
		}
		if has(pv.Finalizers, pvProtection) {
			if err := k.patch("pv", "", pv.Name, map[string]interface{}{"metadata": map[string]interface{}{
				"finalizers": without(pv.Finalizers, pvProtection)}}); err != nil && !apierrors.IsNotFound(err) {
				return err
			}
		}
		err := k.cs.CoreV1().PersistentVolumes().Delete(k.ctx, pv.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		klog.Infof("volume %s of claim %s/%s deleted", pv.Name, ns, name)
	}
	return nil
}
