package server

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/postrotate/postrotate/coordinator/vault"
)

// Hidden stands for a secret value the API does not reveal (reveal=true shows it).
const Hidden = "********"

// RecordSummary is one record in GET /v1/records.
type RecordSummary struct {
	UID   string `json:"uid"`
	Type  string `json:"type"`
	Title string `json:"title,omitempty"`
	// Source says where the current password comes from: "inventory", or
	// "rotation" once postrotate rotated it.
	Source        string    `json:"source,omitempty"`
	PasswordSetAt time.Time `json:"password_set_at,omitzero"`
	InInventory   bool      `json:"in_inventory"`
	// Schedule is the user's rotation schedule, NextRotation when it fires
	// next (as this coordinator computes it).
	Schedule     string          `json:"schedule,omitempty"`
	NextRotation time.Time       `json:"next_rotation,omitzero"`
	LastRotation *vault.Rotation `json:"last_rotation,omitempty"`
}

// RecordView is GET /v1/records/{uid}: the summary, the fields (secret
// values Hidden unless revealed), the current password and the history.
type RecordView struct {
	RecordSummary
	Fields   []FieldView `json:"fields"`
	Password string      `json:"password,omitempty"`
	// Pending is the new password of a rotation that has not ended: it
	// was stored before any task carried it, and becomes the password, or
	// an uncommitted history entry, when the rotation ends.
	Pending  *HistoryView  `json:"pending,omitempty"`
	History  []HistoryView `json:"history"`
	Revealed bool          `json:"revealed"`
}

// FieldView is one field of a record.
type FieldView struct {
	Type   string `json:"type,omitempty"`
	Label  string `json:"label,omitempty"`
	Value  any    `json:"value"`
	Secret bool   `json:"secret,omitempty"`
}

// HistoryView is one previous password: Source "uncommitted" marks one a
// rotation may have set on a target without taking effect.
type HistoryView struct {
	SetAt      time.Time `json:"set_at"`
	RotationID string    `json:"rotation_id,omitempty"`
	Source     string    `json:"source"`
	Password   string    `json:"password"`
}

func (s *Server) summary(e vault.Entry) RecordSummary {
	sum := RecordSummary{
		UID: e.Record.UID, Type: e.Record.Type, Title: e.Record.Title, InInventory: e.InInventory,
		LastRotation: e.LastRotation,
	}
	if e.Password() != "" {
		sum.Source, sum.PasswordSetAt = e.Source, e.Current.SetAt
	}
	if rot := e.Record.Rotation; rot != nil && rot.Schedule != "" {
		sum.Schedule = rot.Schedule
		if sc, err := rot.ParsedSchedule(); err == nil {
			sum.Schedule = sc.String()
		}
		if s.opts.NextRotation != nil {
			if next, ok := s.opts.NextRotation(e.Record.UID); ok {
				sum.NextRotation = next
			}
		}
	}
	return sum
}

// Records returns the summaries of the stored records, by uid.
func (s *Server) Records(ctx context.Context) ([]RecordSummary, error) {
	all, err := s.opts.Records.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]RecordSummary, 0, len(all))
	for _, e := range all {
		out = append(out, s.summary(e))
	}
	return out, nil
}

// Record returns one stored record; its secrets only when reveal is set.
func (s *Server) Record(ctx context.Context, uid string, reveal bool) (RecordView, error) {
	e, err := s.opts.Records.Get(ctx, uid)
	if err != nil {
		return RecordView{}, err
	}
	show := func(v string) string {
		if reveal || v == "" {
			return v
		}
		return Hidden
	}
	v := RecordView{RecordSummary: s.summary(e), Password: show(e.Password()), Revealed: reveal, Fields: []FieldView{}, History: []HistoryView{}}
	for _, f := range e.Record.Fields {
		fv := FieldView{Type: f.Type, Label: f.Label, Value: f.Value, Secret: f.IsSecret()}
		if fv.Secret && !reveal {
			fv.Value = Hidden
		}
		v.Fields = append(v.Fields, fv)
	}
	if p := e.Pending; p != nil {
		v.Pending = &HistoryView{SetAt: p.SetAt, RotationID: p.RotationID, Source: p.Source, Password: show(p.Password)}
	}
	// Uncommitted passwords moved out of the record come last.
	archived, err := s.opts.Records.Archived(ctx, uid)
	if err != nil {
		return RecordView{}, err
	}
	// One moved while its record was being written may be in both.
	archived = slices.DeleteFunc(archived, func(a vault.Version) bool {
		return slices.ContainsFunc(e.History, func(h vault.Version) bool { return h.RotationID == a.RotationID && h.Source == a.Source })
	})
	for _, h := range slices.Concat(e.History, archived) {
		v.History = append(v.History, HistoryView{SetAt: h.SetAt, RotationID: h.RotationID, Source: h.Source, Password: show(h.Password)})
	}
	return v, nil
}

func (s *Server) listRecords(w http.ResponseWriter, r *http.Request) {
	all, err := s.Records(r.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, all)
}

func (s *Server) getRecord(w http.ResponseWriter, r *http.Request) {
	reveal := r.URL.Query().Get("reveal") == "true"
	v, err := s.Record(r.Context(), r.PathValue("uid"), reveal)
	switch {
	case errors.Is(err, vault.ErrNotFound):
		writeError(w, http.StatusNotFound, "%v", err)
	case err != nil:
		writeError(w, http.StatusInternalServerError, "%v", err)
	default:
		if reveal {
			s.log.Info().Str("record_uid", v.UID).Str("remote", r.RemoteAddr).Msg("record secrets revealed")
		}
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, http.StatusOK, v)
	}
}
